#!/usr/bin/env bash
# Stop sshd instances started by ci/sshd/start.sh (by their pid files).
#
#   ci/sshd/stop.sh          the main instance (127.0.0.1:2222)
#   ci/sshd/stop.sh NETNS    the instance in network namespace NETNS
#   ci/sshd/stop.sh --all    all of them
# Keys and ssh_config are kept.
set -euo pipefail
CI_SYSTEM=sshd
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

stop_instance() { # DIR NAME
    stop_pidfile "$1/sshd.pid" sshd 15 "$2"
    rm -f "$1/stamp"
}

case "${1:-}" in
"")
    stop_instance "$STATE" sshd
    ;;
--all)
    stop_instance "$STATE" sshd
    for d in "$STATE"/netns/*/; do
        [ -d "$d" ] || continue
        stop_instance "${d%/}" "sshd in netns $(basename "$d")"
    done
    ;;
*)
    stop_instance "$STATE/netns/$1" "sshd in netns $1"
    ;;
esac
log "stopped"
