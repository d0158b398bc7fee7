#!/usr/bin/env bash
# Start a one-node Kubernetes 1.20 for the KubeCluster tests: dockerd, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and a kubelet (Docker runtime), the API on 127.0.0.1; then
# build the worker image (Debian + python3 + this checkout) into the local Docker.
# Idempotent: when everything is running with the same setup, only the worker image is brought up
# to date with the checkout (a hash check, or a build of about 10 s when the code changed).
#
#   ci/kubernetes/start.sh                 install (once per machine, ci/kubernetes/install.sh), start
#   ci/kubernetes/start.sh --install-only  only install and build the binaries
#
# Afterwards `. ci/state/kubernetes/env.sh` sets KUBECONFIG (admin, static token),
# JOBQUEUE_TEST_KUBERNETES_IMAGE (the worker image) and KUBECTL (a kubectl 1.20).
# Images are local only (Docker Hub is unreachable): local/debian:12 (debootstrap),
# local/pause:3.2 (a static pause binary), local/jobqueue-worker:HASH.
# State: ci/state/kubernetes/ (pki, kubeconfig, logs, pid files, etcd data); the kubelet's root
# directory is /var/lib/jobqueue-ci/kubelet (it mounts secret volumes there).
set -euo pipefail
CI_SYSTEM=kubernetes
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
HERE=$CI_DIR/kubernetes
ROOT=$(cd "$CI_DIR/.." && pwd)

"$HERE/install.sh"
[ "${1:-}" = --install-only ] && exit 0
# shellcheck source=common.sh
. "$HERE/common.sh"

STAMP="$(script_stamp "$0" "$HERE/common.sh" "$HERE/runc-clamp" "$CI_DIR/docker.sh")-$NODE"

# ---------------------------------------------------------------- fast path
running() {
    docker_ok && pid_alive "$RUN/etcd.pid" etcd && pid_alive "$RUN/kube-apiserver.pid" kube-apiserver &&
        pid_alive "$RUN/kube-controller-manager.pid" kube-controller && pid_alive "$RUN/kube-scheduler.pid" kube-scheduler &&
        pid_alive "$RUN/kubelet.pid" kubelet && [ "$(cat "$STATE/stamp" 2>/dev/null)" = "$STAMP" ] &&
        [ "$(cat "$OWNER" 2>/dev/null)" = "$STATE" ] && node_ready
}
if running; then
    log "already running (apiserver pid $(cat "$RUN/kube-apiserver.pid"), node $NODE Ready)"
    worker_image
    write_env
    exit 0
fi

# ---------------------------------------------------------------- stop leftovers
# A Kubernetes started by an older setup or by another checkout holds the ports and the kubelet's
# root directory: stop it by its pid files (the owner file names its state directory).
other=$(cat "$OWNER" 2>/dev/null || true)
if [ -n "$other" ] && [ "$other" != "$STATE" ] && [ -d "$other/run" ]; then
    log "stopping the Kubernetes started from $other"
    "$HERE/stop.sh" --keep-docker --state "$other"
fi
"$HERE/stop.sh" --keep-docker --state "$STATE"
rm -f "$STATE/stamp"
mkdir -p "$RUN" "$LOGD" "$(dirname "$OWNER")"
echo "$STATE" >"$OWNER"

# ---------------------------------------------------------------- docker, images
start_docker
# Pod containers of a Kubernetes whose processes were killed (not stopped by stop.sh).
leftover=$("$DOCKER" ps -aq --filter label=io.kubernetes.pod.name)
if [ -n "$leftover" ]; then
    log "removing $(echo "$leftover" | wc -l) pod containers left by an earlier run"
    # shellcheck disable=SC2086
    "$DOCKER" rm -f $leftover >/dev/null 2>&1 || true
fi
base_images

# ---------------------------------------------------------------- pki, kubeconfig
pki

# ---------------------------------------------------------------- control plane
rm -rf "$STATE/etcd"
daemon etcd /usr/bin/etcd --name jobqueue-ci --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "jobqueue-ci=http://127.0.0.1:$ETCD_PEER_PORT"
wait_until 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health" ||
    { tail_logs "$LOGD/etcd.log"; die "etcd did not answer on 127.0.0.1:$ETCD_PORT within 30 s"; }

daemon kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode RBAC --service-cluster-ip-range 10.96.0.0/24 \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --kubelet-preferred-address-types InternalIP --allow-privileged=false \
    --kubelet-client-certificate "$PKI/kubelet-client.crt" --kubelet-client-key "$PKI/kubelet-client.key"
wait_until 60 kc get --raw /readyz ||
    { tail_logs "$LOGD/kube-apiserver.log"; die "kube-apiserver was not ready within 60 s"; }

daemon kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --leader-elect=false --port 0 --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" --use-service-account-credentials=false
daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false --port 0

# ---------------------------------------------------------------- kubelet
[ -n "$NODE_IP" ] || die "no address on the default route for the kubelet (ip -4 route get 203.0.113.1)"
mkdir -p "$KUBELET_ROOT"
daemon kubelet "$BIN/kubelet" --kubeconfig "$KUBECONFIG_FILE" --root-dir "$KUBELET_ROOT" \
    --cert-dir "$STATE/kubelet-pki" --hostname-override "$NODE" --node-ip "$NODE_IP" --address "$NODE_IP" \
    --anonymous-auth=false --client-ca-file "$PKI/ca.crt" --read-only-port 0 --container-runtime docker --docker-endpoint unix:///var/run/docker.sock \
    --pod-infra-container-image local/pause:3.2 --cgroup-driver cgroupfs --fail-swap-on=false \
    --cgroups-per-qos=false --enforce-node-allocatable= --image-gc-high-threshold 100 \
    --image-gc-low-threshold 99 --eviction-hard 'memory.available<100Mi' --max-pods 40 \
    --serialize-image-pulls=false --resolv-conf /etc/resolv.conf
if ! wait_until 90 node_ready; then
    kc describe node "$NODE" >&2 || true
    tail_logs "$LOGD/kubelet.log" "$LOGD/kube-apiserver.log"
    die "node $NODE was not Ready within 90 s"
fi
# Pods need the namespace's default service account, which the controller-manager creates.
wait_until 60 kc get serviceaccount default -n default ||
    { tail_logs "$LOGD/kube-controller-manager.log"; die "no service account default/default within 60 s"; }

# ---------------------------------------------------------------- smoke test
smoke_test
worker_image
write_env
echo "$STAMP" >"$STATE/stamp"
log "running: node $NODE Ready, API https://127.0.0.1:$API_PORT, smoke pod ran; . $STATE/env.sh"
