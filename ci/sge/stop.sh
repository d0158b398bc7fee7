#!/usr/bin/env bash
# Stop sge_execd and sge_qmaster started by ci/sge/start.sh (by their pid files in ci/state/sge/run).
# Note: stopping the daemons kills running jobs; pending jobs stay queued (spool in /var/spool/gridengine).
set -euo pipefail
CI_SYSTEM=sge
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

stop_pidfile "$STATE/run/execd.pid" sge_execd 30
stop_pidfile "$STATE/run/qmaster.pid" sge_qmaster 30
rm -f "$STATE/stamp"
log "stopped"
