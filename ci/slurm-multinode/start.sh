#!/usr/bin/env bash
# Start a multi-node SLURM in containers, with this host as its login node: a controller (jqctl)
# and two compute nodes (jqnode1, jqnode2) on the docker network jqslurm, whose bridge on the host
# is jqslurm0 (172.30.99.1/24). The host submits to it with
#   SLURM_CONF=ci/state/slurm-multinode/etc/slurm.conf sbatch ...
# (its munged and key are the single-node SLURM's, ci/slurm/start.sh; the containers get the key).
# The compute nodes see, at the same paths: $HOME (read-write: token files, job output), this
# checkout's top-level directory (read-only: the checkout and its .venv, which they run with their
# own python3, the same Debian 12 one) and ci/state/slurm-multinode/shared/ (read-write). Inside
# them the cluster network's interface is also named jqslurm0, as ib0 is on a real cluster.
# Idempotent: when everything runs with the same setup, exits 0 at once (a second or two).
#
#   ci/slurm-multinode/start.sh                 install, build the images (once), start, smoke test
#   ci/slurm-multinode/start.sh --install-only  only install the packages
#
# Images: local/jobqueue-slurm-{ctld,node}:HASH (HASH covers Dockerfile, entrypoint.sh and the base
# image), built once per machine (about 1-2 minutes) and kept in Docker's image store.
# State: ci/state/slurm-multinode/env.sh, and etc/ (slurm.conf), log/ and shared/: links to
# /var/lib/jobqueue-ci/slurm-multinode/, what the containers mount, outside any checkout. Any
# checkout with the same scripts and shared directories uses a running cluster as it is.
set -euo pipefail
CI_SYSTEM=slurm-multinode
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
HERE=$CI_DIR/slurm-multinode
# shellcheck source=common.sh
. "$HERE/common.sh"

apt_install slurm-client munge docker.io debootstrap jq iptables
[ "${1:-}" = --install-only ] && exit 0

# The host's munged (and the key the containers get) is the single-node SLURM's.
if ! { munge -n | unmunge; } >/dev/null 2>&1 || [ ! -s /etc/munge/munge.key ]; then
    log "no working munged on this host: starting the single-node SLURM (ci/slurm/start.sh) for it"
    "$CI_DIR/slurm/start.sh"
fi

MOUNTS=$(shared_mounts)
STAMP="$(script_stamp "$0" "$HERE/common.sh" "$HERE/Dockerfile" "$HERE/entrypoint.sh" "$CI_DIR/docker.sh")-$(echo "$MOUNTS" | sha256sum | cut -c1-8)"

# ---------------------------------------------------------------- fast path
# Started by any checkout whose scripts and shared directories are this one's.
if docker_ok && containers_running && nodes_ready; then
    write_env
    log "already running (nodes ${NODES[*]} up; . $STATE/env.sh)"
    exit 0
fi

# ---------------------------------------------------------------- stop leftovers
"$HERE/stop.sh"
mkdir -p "$ETC" "$LOGD" "$SHARED"
rm -f "$LOGD"/*.log            # the daemons' logs of the last start only

# ---------------------------------------------------------------- docker, images
start_docker
debian_image
build_images

# ---------------------------------------------------------------- config
write_config

# ---------------------------------------------------------------- network, containers
log "creating the network $NETWORK (bridge $BRIDGE, $SUBNET)"
"$DOCKER" network create --driver bridge --subnet "$SUBNET" --gateway "$GATEWAY" \
    -o com.docker.network.bridge.name="$BRIDGE" --label "$LABEL" "$NETWORK" >/dev/null ||
    die "docker network create $NETWORK failed (is $SUBNET or the bridge name $BRIDGE taken? ip -4 route; ip link show $BRIDGE)"

run_container jqslurm-ctl "$CTL" "$CTL_IP" "$CTLD_IMAGE" ctld
if ! wait_until 30 sh -c "SLURM_CONF='$CONF' scontrol ping | grep -q 'is UP'"; then
    "$DOCKER" logs --tail 30 jqslurm-ctl >&2 || true
    tail_logs "$LOGD/slurmctld.log"
    die "slurmctld in jqslurm-ctl did not answer 'scontrol ping' from the host within 30 s"
fi
mapfile -t mounts < <(mount_options)
for i in "${!NODES[@]}"; do
    run_container "jqslurm-${NODES[$i]#jq}" "${NODES[$i]}" "${NODE_IPS[$i]}" "$NODE_IMAGE" node \
        --cap-add NET_ADMIN -e "JOBQUEUE_CI_IFNAME=$BRIDGE" "${mounts[@]}"
done
if ! wait_until 60 nodes_ready; then
    SLURM_CONF=$CONF sinfo -N -l >&2 || true
    for n in "${NODES[@]}"; do "$DOCKER" logs --tail 20 "jqslurm-${n#jq}" >&2 || true; done
    tail_logs "$LOGD/slurmctld.log" "$LOGD"/slurmd-*.log
    die "the nodes ${NODES[*]} did not become idle within 60 s"
fi

# ---------------------------------------------------------------- smoke test
smoke_test
write_env
log "running: ${NODES[*]} idle, a job ran on each; SLURM_CONF=$CONF; . $STATE/env.sh"
