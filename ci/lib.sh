# shellcheck shell=bash
# Shared helpers for ci/*/start.sh and ci/*/stop.sh. Source it; do not run it.
#
# The caller sets CI_SYSTEM (used in messages) before sourcing. This file sets:
#   CI_DIR    absolute path of the ci/ directory (computed from this file's location)
#   STATE     $CI_DIR/state/$CI_SYSTEM (created)
# Nothing is exported.

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=$CI_DIR/state/$CI_SYSTEM
mkdir -p "$STATE"

_CI_T0=$(date +%s%N)
_ci_elapsed() { local d=$(($(date +%s%N) - _CI_T0)); printf '%d.%01ds' $((d / 1000000000)) $((d / 100000000 % 10)); }
log() { echo "[$CI_SYSTEM +$(_ci_elapsed)] $*" >&2; }
die() { echo "[$CI_SYSTEM +$(_ci_elapsed)] ERROR: $*" >&2; exit 1; }

# Print the last lines of the given log files (to stderr), for error messages.
tail_logs() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || continue
        echo "----- last 30 lines of $f -----" >&2
        tail -n 30 "$f" >&2 || true
    done
}

# pid_alive PIDFILE [COMM]: true if the pid file names a running process (whose
# /proc/PID/comm is COMM, if given: guards against a stale pid file whose pid was reused).
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop_pidfile PIDFILE COMM [TIMEOUT_S] [LABEL]: SIGTERM the process named in PIDFILE
# (only if its command name is COMM), wait up to TIMEOUT_S (15), then SIGKILL.
# Removes the pid file.
stop_pidfile() {
    local f=$1 comm=$2 timeout=${3:-15} label=${4:-$2} pid i
    if ! pid_alive "$f" "$comm"; then
        rm -f "$f"
        return 0
    fi
    pid=$(head -n1 "$f" | tr -dc '0-9')
    log "stopping $label (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$label (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$f"
}

# wait_until TIMEOUT_S COMMAND...: poll COMMAND every 0.2 s until it succeeds. Returns 1 on timeout.
wait_until() {
    local timeout=$1 end
    shift
    end=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

# pkg_installed PKG: true if the Debian package is installed.
pkg_installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# apt-get update, unless this script or another ci/ script did it less than 30 min ago.
_CI_APT_MARKER=/var/tmp/jobqueue-ci-apt-updated
apt_update_once() {
    if [ -n "$(find "$_CI_APT_MARKER" -mmin -30 2>/dev/null)" ]; then
        return 0
    fi
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    touch "$_CI_APT_MARKER"
}

# apt_install PKG...: install the packages that are missing (Debian packages only).
# Daemons are never started by the packages' maintainer scripts: a policy-rc.d that
# denies all init-script actions is in place during the install (we start daemons ourselves).
apt_install() {
    local missing=() p created='' rc=0
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update_once
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, created by jobqueue ci/lib.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >"$STATE/apt-install.log" 2>&1 || rc=$?
    if [ -n "$created" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ $rc -ne 0 ]; then
        tail_logs "$STATE/apt-install.log"
        die "apt-get install ${missing[*]} failed (rc=$rc), full log: $STATE/apt-install.log"
    fi
}

# Fingerprint of the scripts that define a system's setup: the fast path ("already
# running") is only taken when the running daemons were started by identical scripts.
script_stamp() {
    cat "$CI_DIR/lib.sh" "$@" | sha256sum | cut -c1-16
}
