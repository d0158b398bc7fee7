# shellcheck shell=bash
# Shared by ci/kubernetes/*.sh (after ../lib.sh): paths, ports and the steps of start.sh.

K8S_VERSION=1.20.2
CACHE=${JOBQUEUE_CI_CACHE:-/var/cache/jobqueue-ci}/kubernetes/$K8S_VERSION
BIN=$CACHE/bin
MACHINE_DIR=/var/lib/jobqueue-ci            # outside any checkout: what outlives one
OWNER=$MACHINE_DIR/kubernetes.owner         # the state directory of the running Kubernetes
KUBELET_ROOT=$MACHINE_DIR/kubelet
CLAMP=$MACHINE_DIR/runc-clamp
DOCKER=/usr/bin/docker                      # Debian's client (another may come first on PATH)
STATE=$(cd "$STATE" && pwd -P)
RUN=$STATE/run
LOGD=$STATE/log
PKI=$STATE/pki
KUBECONFIG_FILE=$STATE/admin.kubeconfig
ETCD_PORT=12379
ETCD_PEER_PORT=12380
API_PORT=6443
NODE=$(hostname -s | tr '[:upper:]' '[:lower:]')
# The kubelet refuses a loopback node IP: it listens on the address of the default route (with
# client certificates required), where the API server reaches it for logs.
NODE_IP=$(ip -4 route get 203.0.113.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}')
WORKER_REPO=local/jobqueue-worker

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# The Debian mirror apt already uses.
debian_mirror() {
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$m" ] || die "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    echo "$m"
}

# daemon NAME COMMAND...: start COMMAND in its own session, log to log/NAME.log, pid in run/NAME.pid.
daemon() {
    local name=$1
    shift
    log "starting $name"
    setsid nohup "$@" >"$LOGD/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

node_ready() {
    [ "$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# ---------------------------------------------------------------- docker
docker_ok() {
    [ "$("$DOCKER" info --format '{{.DefaultRuntime}}' 2>/dev/null)" = clamp ]
}

start_docker() {
    if docker_ok; then
        return 0
    fi
    if "$DOCKER" info >/dev/null 2>&1; then
        log "a dockerd without the clamp runtime is running; restarting it with that runtime"
        stop_pidfile /var/run/docker.pid dockerd 30
    fi
    mkdir -p "$MACHINE_DIR"
    cp "$HERE/runc-clamp" "$CLAMP.tmp" && chmod 755 "$CLAMP.tmp" && mv "$CLAMP.tmp" "$CLAMP"
    local dev mtu
    dev=$(ip route show default 2>/dev/null | awk '{print $5; exit}')
    mtu=$(cat "/sys/class/net/${dev:-lo}/mtu" 2>/dev/null || echo 1500)
    [ "$mtu" -le 1500 ] || mtu=1500
    log "starting dockerd (default runtime: $CLAMP, mtu $mtu)"
    setsid nohup /usr/sbin/dockerd --add-runtime "clamp=$CLAMP" --default-runtime clamp --mtu "$mtu" \
        --pidfile /var/run/docker.pid >"$LOGD/dockerd.log" 2>&1 </dev/null &
    wait_until 30 docker_ok || { tail_logs "$LOGD/dockerd.log"; die "dockerd did not start within 30 s"; }
}

# local/debian:12 (debootstrap minbase, the tarball cached) and local/pause:3.2.
base_images() {
    local tarball=$CACHE/debian-12-minbase.tar dir
    if ! "$DOCKER" image inspect local/debian:12 >/dev/null 2>&1; then
        if [ ! -s "$tarball" ]; then
            dir=$CACHE/rootfs
            rm -rf "$dir"
            log "debootstrap --variant=minbase bookworm (about 45 s)"
            debootstrap --variant=minbase bookworm "$dir" "$(debian_mirror)" >"$LOGD/debootstrap.log" 2>&1 ||
                { tail_logs "$LOGD/debootstrap.log"; die "debootstrap failed"; }
            tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
            rm -rf "$dir"
        fi
        "$DOCKER" import "$tarball" local/debian:12 >/dev/null || die "docker import $tarball failed"
    fi
    if ! "$DOCKER" image inspect local/pause:3.2 >/dev/null 2>&1; then
        dir=$(mktemp -d)
        cp "$BIN/pause" "$dir/pause"
        tar -C "$dir" -c pause | "$DOCKER" import --change 'ENTRYPOINT ["/pause"]' - local/pause:3.2 >/dev/null ||
            die "docker import of the pause image failed"
        rm -rf "$dir"
    fi
}

# ---------------------------------------------------------------- certificates, token, kubeconfig
pki() {
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    (
        cd "$PKI"
        umask 077
        if [ ! -s ca.crt ]; then
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
                -subj /CN=jobqueue-ci-ca 2>/dev/null
        fi
        if [ ! -s apiserver.crt ]; then
            openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
                -subj /CN=kube-apiserver 2>/dev/null
            printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
                "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" >apiserver.ext
            openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        fi
        if [ ! -s kubelet-client.crt ]; then
            openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
                -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
            echo "extendedKeyUsage=clientAuth" >kubelet-client.ext
            openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile kubelet-client.ext -out kubelet-client.crt 2>/dev/null
        fi
        if [ ! -s sa.key ]; then
            openssl genrsa -out sa.key 2048 2>/dev/null
            openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        fi
        if [ ! -s tokens.csv ]; then
            echo "$(openssl rand -hex 32),admin,admin,system:masters" >tokens.csv
        fi
    ) || die "creating the certificates in $PKI failed"
    local token
    token=$(cut -d, -f1 "$PKI/tokens.csv")
    (
        umask 077
        cat >"$KUBECONFIG_FILE" <<EOF
# Generated by jobqueue ci/kubernetes/start.sh: the admin of the test Kubernetes (static token).
apiVersion: v1
kind: Config
clusters:
- name: jobqueue-ci
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: jobqueue-ci
  context: {cluster: jobqueue-ci, user: admin, namespace: default}
current-context: jobqueue-ci
EOF
    )
}

# ---------------------------------------------------------------- checks, images, env
smoke_test() {
    local pod=jobqueue-ci-smoke phase out
    kc delete pod "$pod" --ignore-not-found --wait=true >/dev/null 2>&1 || true
    kc create -f - >/dev/null <<EOF || die "creating the smoke pod failed"
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - {name: smoke, image: "local/debian:12", imagePullPolicy: Never, command: [echo, jobqueue-ci-smoke-ok]}
EOF
    smoke_done() {
        phase=$(kc get pod "$pod" -o 'jsonpath={.status.phase}')
        [ "$phase" = Succeeded ] || [ "$phase" = Failed ]
    }
    if ! wait_until 90 smoke_done || [ "$phase" != Succeeded ]; then
        kc describe pod "$pod" >&2 || true
        tail_logs "$LOGD/kubelet.log" "$LOGD/dockerd.log"
        die "the smoke pod did not succeed within 90 s (phase: ${phase:-none})"
    fi
    out=$(kc logs "$pod" 2>&1) || true
    [ "$out" = jobqueue-ci-smoke-ok ] || die "kubectl logs of the smoke pod gave '$out', not jobqueue-ci-smoke-ok"
    kc delete pod "$pod" --wait=true >/dev/null || die "deleting the smoke pod failed"
}

# The python whose package versions the worker image copies: the checkout's venv (ci/test.sh made it).
ci_python() {
    if [ -n "${JOBQUEUE_CI_PYTHON:-}" ]; then
        echo "$JOBQUEUE_CI_PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then
        echo "$ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

# local/jobqueue-worker:HASH: Debian + python3 + this checkout, with the runtime dependencies at the
# versions installed in ci_python (cloudpickle must match on both ends). HASH covers the package's
# files, those versions and the Dockerfile, so an unchanged checkout reuses its image.
worker_image() {
    local py constraints hash ctx
    py=$(ci_python)
    constraints=$("$py" -m pip freeze 2>/dev/null | grep -iE '^(tornado|msgpack|cloudpickle|psutil|jinja2|markupsafe|pyyaml)==' || true)
    hash=$(
        cd "$ROOT"
        {
            find jobqueue pyproject.toml README.md -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
                sort -z | xargs -0 sha256sum
            echo "$constraints"
            cat "$HERE/worker.Dockerfile"
        } | sha256sum | cut -c1-12
    )
    WORKER_IMAGE=$WORKER_REPO:$hash
    if "$DOCKER" image inspect "$WORKER_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    log "building the worker image $WORKER_IMAGE from $ROOT"
    ctx=$(mktemp -d)
    mkdir -p "$ctx/src"
    (cd "$ROOT" && cp -r jobqueue pyproject.toml README.md "$ctx/src/")
    find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
    echo "$constraints" >"$ctx/constraints.txt"
    "$py" -m pip wheel -q --wheel-dir "$ctx/wheels" -c "$ctx/constraints.txt" "$ctx/src" >"$LOGD/worker-wheels.log" 2>&1 ||
        { tail_logs "$LOGD/worker-wheels.log"; die "pip wheel of the checkout (for the worker image) failed"; }
    nice -n 19 "$DOCKER" build -q -f "$HERE/worker.Dockerfile" -t "$WORKER_IMAGE" "$ctx" >"$LOGD/worker-image.log" 2>&1 ||
        { tail_logs "$LOGD/worker-image.log"; die "docker build of the worker image failed"; }
    rm -rf "$ctx"
    "$DOCKER" run --rm "$WORKER_IMAGE" python -c 'import jobqueue.core.worker' ||
        die "the worker image $WORKER_IMAGE cannot import jobqueue.core.worker"
}

write_env() {
    cat >"$STATE/env.sh" <<EOF
# Sourced by users of the test Kubernetes (bash/sh): . ci/state/kubernetes/env.sh
export KUBECONFIG=$KUBECONFIG_FILE
export KUBECTL=$BIN/kubectl
export JOBQUEUE_TEST_KUBERNETES_IMAGE=$WORKER_IMAGE
EOF
}
