# shellcheck shell=bash
# Docker for the ci/ systems that run containers (kubernetes, slurm-multinode): one dockerd per
# machine, started here the same way by both, and the base image local/debian:12 built from
# Debian's packages (Docker Hub is unreachable). Source it after lib.sh, with LOGD set (where
# dockerd's and debootstrap's logs go).
#
#   start_docker     start dockerd (default runtime: ci/kubernetes/runc-clamp), if not running
#   debian_image     local/debian:12 (debootstrap --variant=minbase bookworm, the tarball cached)
#   debian_mirror    the Debian mirror apt already uses

CI_CACHE=${JOBQUEUE_CI_CACHE:-/var/cache/jobqueue-ci}
MACHINE_DIR=/var/lib/jobqueue-ci            # outside any checkout: what outlives one
CLAMP=$MACHINE_DIR/runc-clamp
DOCKER=/usr/bin/docker                      # Debian's client (another may come first on PATH)

# The Debian mirror apt already uses.
debian_mirror() {
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$m" ] || die "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    echo "$m"
}

docker_ok() {
    [ "$("$DOCKER" info --format '{{.DefaultRuntime}}' 2>/dev/null)" = clamp ]
}

# dockerd runs every container through runc-clamp, which raises a negative oomScoreAdj to 0 (the
# kubelet asks for -998; this VM lacks CAP_SYS_RESOURCE). Other containers are unaffected.
start_docker() {
    apt_install docker.io debootstrap jq iptables
    if docker_ok; then
        return 0
    fi
    if "$DOCKER" info >/dev/null 2>&1; then
        log "a dockerd without the clamp runtime is running; restarting it with that runtime"
        stop_pidfile /var/run/docker.pid dockerd 30
    fi
    mkdir -p "$MACHINE_DIR" "$LOGD"
    cp "$CI_DIR/kubernetes/runc-clamp" "$CLAMP.tmp" && chmod 755 "$CLAMP.tmp" && mv "$CLAMP.tmp" "$CLAMP"
    local dev mtu
    dev=$(ip route show default 2>/dev/null | awk '{print $5; exit}')
    mtu=$(cat "/sys/class/net/${dev:-lo}/mtu" 2>/dev/null || echo 1500)
    [ "$mtu" -le 1500 ] || mtu=1500
    log "starting dockerd (default runtime: $CLAMP, mtu $mtu)"
    setsid nohup /usr/sbin/dockerd --add-runtime "clamp=$CLAMP" --default-runtime clamp --mtu "$mtu" \
        --pidfile /var/run/docker.pid >"$LOGD/dockerd.log" 2>&1 </dev/null &
    wait_until 30 docker_ok || { tail_logs "$LOGD/dockerd.log"; die "dockerd did not start within 30 s"; }
}

# local/debian:12: debootstrap minbase, its tarball cached in $CI_CACHE/debian/ (about 45 s once).
debian_image() {
    local tarball=$CI_CACHE/debian/debian-12-minbase.tar dir
    if "$DOCKER" image inspect local/debian:12 >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$CI_CACHE/debian" "$LOGD"
    # where ci/kubernetes kept it before
    [ -s "$tarball" ] || [ ! -s "$CI_CACHE/kubernetes/1.20.2/debian-12-minbase.tar" ] ||
        mv "$CI_CACHE/kubernetes/1.20.2/debian-12-minbase.tar" "$tarball"
    if [ ! -s "$tarball" ]; then
        dir=$CI_CACHE/debian/rootfs
        rm -rf "$dir"
        log "debootstrap --variant=minbase bookworm (about 45 s)"
        debootstrap --variant=minbase bookworm "$dir" "$(debian_mirror)" >"$LOGD/debootstrap.log" 2>&1 ||
            { tail_logs "$LOGD/debootstrap.log"; die "debootstrap failed"; }
        tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$dir"
    fi
    "$DOCKER" import "$tarball" local/debian:12 >/dev/null || die "docker import $tarball failed"
}
