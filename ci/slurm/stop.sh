#!/usr/bin/env bash
# Stop the daemons started by ci/slurm/start.sh (by their pid files in ci/state/slurm/).
# Running jobs' slurmstepd processes are not killed; the saved controller state
# (ci/state/slurm/ctld) and the accounting database (ci/state/slurm/acct/mysql) are kept, so
# job ids continue after the next start.
set -euo pipefail
CI_SYSTEM=slurm
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
# shellcheck source=accounting.sh
. "$(cd "$(dirname "$0")" && pwd)/accounting.sh"

stop_pidfile "$STATE/run/slurmd.pid" slurmd
stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
stop_accounting "$STATE/acct"
stop_pidfile "$STATE/munge/munged.pid" munged
rm -f "$STATE/stamp"
log "stopped"
