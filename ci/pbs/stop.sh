#!/usr/bin/env bash
# The PBS wrappers have no daemons of their own: they drive the SLURM cluster, which
# ci/slurm/stop.sh stops. Nothing to do here (kept for symmetry with the other systems).
set -euo pipefail
CI_SYSTEM=pbs
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
log "nothing to stop (the wrappers use SLURM; see ci/slurm/stop.sh)"
