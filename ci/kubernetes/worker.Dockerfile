# The worker image of the KubeCluster tests: Debian + python3 + this checkout (built by
# ci/kubernetes/start.sh from a context holding the checkout's wheel and its dependencies' wheels).
FROM local/debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 python3-venv >/dev/null && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/jobqueue
COPY wheels /tmp/wheels
RUN /opt/jobqueue/bin/pip install -q --no-index --find-links /tmp/wheels jobqueue && rm -rf /tmp/wheels
ENV PATH=/opt/jobqueue/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
