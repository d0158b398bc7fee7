#!/usr/bin/env bash
# Install Docker and etcd (Debian packages) and build Kubernetes 1.20 from Debian's source package,
# once per machine, into a cache outside the checkout:
#
#   $JOBQUEUE_CI_CACHE/kubernetes/1.20.2/bin/   (JOBQUEUE_CI_CACHE defaults to /var/cache/jobqueue-ci)
#     kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause
#
# A later run finds bin/.complete and only checks the packages (a second). The build takes about
# 9 minutes on 2 idle cores and runs under `nice -n 19`; its log is $CACHE/build.log. No prebuilt
# Kubernetes can be fetched on these machines (shared/notes/docker-and-kubernetes.md).
#
#   ci/kubernetes/install.sh            install + build if missing
#   ci/kubernetes/install.sh --rebuild  drop the cached binaries and build again
set -euo pipefail
CI_SYSTEM=kubernetes
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
# shellcheck source=common.sh
. "$CI_DIR/kubernetes/common.sh"
WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl"

apt_install docker.io debootstrap etcd-server golang-go rsync jq curl openssl gcc libc6-dev make \
    dpkg-dev iptables

if [ "${1:-}" = --rebuild ]; then
    rm -rf "$BIN"
fi
if [ -f "$BIN/.complete" ]; then
    exit 0
fi

WORK=$CACHE/build
rm -rf "$WORK" "$BIN" "$BIN.tmp"
mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$WORK/src"
LOG=$CACHE/build.log
: >"$LOG"

# ---------------------------------------------------------------- source package
# A private sources list, lists directory and cache: the system's apt setup stays untouched.
mirror=$(debian_mirror)
echo "deb-src $mirror bookworm main" >"$WORK/sources.list"
apt_private() {
    apt-get -q -o Dir::Etc::SourceList="$WORK/sources.list" -o Dir::Etc::SourceParts=- \
        -o Dir::State::Lists="$WORK/lists" -o Dir::Cache::Archives="$WORK/archives" \
        -o APT::Sandbox::User=root "$@"
}
log "fetching Debian's kubernetes source package from $mirror"
apt_private update >>"$LOG" 2>&1 || { tail_logs "$LOG"; die "apt-get update (deb-src $mirror) failed"; }
(cd "$WORK/src" && apt_private source --download-only kubernetes) >>"$LOG" 2>&1 ||
    { tail_logs "$LOG"; die "apt-get source --download-only kubernetes failed"; }
dsc=$(ls "$WORK"/src/kubernetes_*.dsc | head -n1)
(cd "$WORK/src" && dpkg-source --no-check -x "$dsc" tree) >>"$LOG" 2>&1 ||
    { tail_logs "$LOG"; die "dpkg-source -x $dsc failed"; }

# ---------------------------------------------------------------- build
log "building $WHAT (about 9 minutes on 2 idle cores, nice -n 19; log: $LOG)"
t=$SECONDS
(
    cd "$WORK/src/tree"
    export GOCACHE=$WORK/gocache GOPROXY=off
    export KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean
    nice -n 19 make WHAT="$WHAT"
) >>"$LOG" 2>&1 || { tail_logs "$LOG"; die "make WHAT=\"$WHAT\" failed (full log: $LOG)"; }
log "built in $((SECONDS - t)) s"

mkdir -p "$BIN.tmp"
for b in $WHAT; do
    cp "$WORK/src/tree/_output/local/bin/linux/amd64/${b#cmd/}" "$BIN.tmp/"
done
# The pod sandbox ("pause") container's binary, static, for an image with nothing else in it.
gcc -Os -static -DVERSION="v3.2-jobqueue" -o "$BIN.tmp/pause" "$WORK/src/tree/build/pause/linux/pause.c" >>"$LOG" 2>&1 ||
    { tail_logs "$LOG"; die "gcc -static build/pause/linux/pause.c failed"; }
echo "$K8S_VERSION" >"$BIN.tmp/.complete"
mv "$BIN.tmp" "$BIN"
rm -rf "$WORK"
log "cached in $BIN: $(cd "$BIN" && ls | tr '\n' ' ')"
