#!/usr/bin/env bash
# Stop the container SLURM cluster of ci/slurm-multinode/start.sh: remove its containers and its
# network (by their label jobqueue-ci=slurm-multinode, whichever checkout started them). dockerd and
# the images stay (ci/kubernetes/stop.sh stops dockerd). Idempotent.
set -euo pipefail
CI_SYSTEM=slurm-multinode
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
HERE=$CI_DIR/slurm-multinode
# shellcheck source=common.sh
. "$HERE/common.sh"

if [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
    containers=$("$DOCKER" ps -aq --filter "label=$LABEL")
    if [ -n "$containers" ]; then
        log "removing $(echo "$containers" | wc -l) containers"
        # shellcheck disable=SC2086
        "$DOCKER" rm -f $containers >/dev/null
    fi
    networks=$("$DOCKER" network ls -q --filter "label=$LABEL")
    if [ -n "$networks" ]; then
        # shellcheck disable=SC2086
        "$DOCKER" network rm $networks >/dev/null
    fi
fi
rm -f "$STATE/env.sh"
log "stopped"
