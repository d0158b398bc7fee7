#!/usr/bin/env bash
# Stop the Kubernetes started by ci/kubernetes/start.sh (by its pid files), remove its pods'
# containers, unmount what the kubelet mounted, drop its iptables chains, then stop dockerd.
#
#   ci/kubernetes/stop.sh                 everything, dockerd included
#   ci/kubernetes/stop.sh --keep-docker   leave dockerd (and the images) running
#   ci/kubernetes/stop.sh --state DIR     the Kubernetes whose state directory is DIR (another checkout's)
set -euo pipefail
CI_SYSTEM=kubernetes
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
HERE=$CI_DIR/kubernetes
keep_docker=
while [ $# -gt 0 ]; do
    case $1 in
    --keep-docker) keep_docker=1 ;;
    --state) STATE=$2; shift ;;
    *) die "unknown argument $1 (usage: stop.sh [--keep-docker] [--state DIR])" ;;
    esac
    shift
done
mkdir -p "$STATE"
# shellcheck source=common.sh
. "$HERE/common.sh"

stop_pidfile "$RUN/kubelet.pid" kubelet 20
if "$DOCKER" info >/dev/null 2>&1; then
    containers=$("$DOCKER" ps -aq --filter label=io.kubernetes.pod.name 2>/dev/null || true)
    if [ -n "$containers" ]; then
        log "removing $(echo "$containers" | wc -l) pod containers"
        # shellcheck disable=SC2086
        "$DOCKER" rm -f $containers >/dev/null 2>&1 || true
    fi
fi
stop_pidfile "$RUN/kube-scheduler.pid" kube-scheduler
stop_pidfile "$RUN/kube-controller-manager.pid" kube-controller
stop_pidfile "$RUN/kube-apiserver.pid" kube-apiserver
stop_pidfile "$RUN/etcd.pid" etcd

# The kubelet's secret volumes (tmpfs) and the like, deepest first.
mounts=$(awk -v root="$KUBELET_ROOT/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r)
while read -r m; do
    [ -z "$m" ] || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done <<<"$mounts"

# The kubelet's KUBE-* chains (KUBE-FIREWALL drops marked packets): unhook, flush, delete.
for table in filter nat; do
    hooks=$(iptables -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' || true)
    while read -r rule; do
        # shellcheck disable=SC2086
        [ -z "$rule" ] || iptables -t "$table" ${rule/-A/-D} 2>/dev/null || true
    done <<<"$hooks"
    chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' || true)
    for c in $chains; do iptables -t "$table" -F "$c" 2>/dev/null || true; done
    for c in $chains; do iptables -t "$table" -X "$c" 2>/dev/null || true; done
done

if [ -z "$keep_docker" ]; then
    stop_pidfile /var/run/docker.pid dockerd 30
fi
rm -f "$STATE/stamp"
if [ "$(cat "$OWNER" 2>/dev/null)" = "$STATE" ]; then
    rm -f "$OWNER"
fi
log "stopped"
