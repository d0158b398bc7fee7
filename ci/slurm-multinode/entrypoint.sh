#!/bin/bash
# The first process of a container of ci/slurm-multinode: munged, then slurmctld (ctld) or slurmd
# (node) in the foreground. /etc/slurm (the cluster's config) and /run/jobqueue-ci/munge.key (the
# host's key) are mounted by start.sh.
#
# With JOBQUEUE_CI_IFNAME set, the container's network interface gets that name (it needs
# NET_ADMIN): the cluster network has the same name on the login node (the host's bridge) and
# on the compute nodes, as ib0 has on a real cluster, so interface="NAME" works on both sides.
set -euo pipefail
role=${1:?usage: jobqueue-ci-entrypoint ctld|node}

if [ -n "${JOBQUEUE_CI_IFNAME:-}" ] && ip link show eth0 >/dev/null 2>&1; then
    gateway=$(ip -4 route show default | awk '{print $3; exit}')
    ip link set eth0 down
    ip link set eth0 name "$JOBQUEUE_CI_IFNAME"
    ip link set "$JOBQUEUE_CI_IFNAME" up
    [ -z "$gateway" ] || ip -4 route replace default via "$gateway" dev "$JOBQUEUE_CI_IFNAME"
fi

install -o munge -g munge -m 0400 /run/jobqueue-ci/munge.key /etc/munge/munge.key
mkdir -p /run/munge
chown munge:munge /run/munge
runuser -u munge -- /usr/sbin/munged

case $role in
ctld)
    mkdir -p /var/spool/slurmctld
    exec /usr/sbin/slurmctld -D -i
    ;;
node)
    mkdir -p /var/spool/slurmd
    exec /usr/sbin/slurmd -D
    ;;
*)
    echo "jobqueue-ci-entrypoint: unknown role $role (ctld or node)" >&2
    exit 2
    ;;
esac
