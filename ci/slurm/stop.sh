#!/usr/bin/env bash
# Stop the daemons started by ci/slurm/start.sh (by their pid files in ci/state/slurm/).
# Running jobs' slurmstepd processes are not killed; the saved controller state
# (ci/state/slurm/ctld) is kept, so job ids continue after the next start.
set -euo pipefail
CI_SYSTEM=slurm
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

stop_pidfile "$STATE/run/slurmd.pid" slurmd
stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
stop_pidfile "$STATE/munge/munged.pid" munged
rm -f "$STATE/stamp"
log "stopped"
