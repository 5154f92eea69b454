#!/usr/bin/env bash
# stop-cluster.sh — stop the cluster started by start-cluster.sh: cancel its
# jobs, then stop slurmd, slurmctld, slurmdbd, mariadbd and munged by the PIDs
# recorded in STATE_DIR/run/*.pid (never by process name).
#
# Usage:  tests/slurm/stop-cluster.sh [STATE_DIR] [--purge]
#   STATE_DIR  same dir given to start-cluster.sh (default: $LOTTO_TEST_SLURM_DIR or /tmp/lotto-slurm)
#   --purge    also delete STATE_DIR (config, accounting DB, logs)
# The /etc/slurm symlinks pointing into STATE_DIR are removed (restoring
# *.orig-lotto-slurm) once the daemons are down: a config naming a dead
# controller makes every later `scontrol` wait ~9 s for it, and Snakemake's
# Slurm plugin runs one whenever snakemake starts (even for `snakemake -n`).
#
# Exit codes: 0 stopped (or nothing to stop), 77 not root, 1 a daemon survived KILL.
set -uo pipefail

D="${LOTTO_TEST_SLURM_DIR:-/tmp/lotto-slurm}"; PURGE=0
for a in "$@"; do case "$a" in --purge) PURGE=1;; *) D="$a";; esac; done
log() { printf '[lotto-slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "UNAVAILABLE: must run as root"; exit 77; }
[ -d "$D" ] || { log "nothing to stop: no state dir $D"; exit 0; }
D="$(cd "$D" && pwd)"
FAILED=0

alive() {   # alive PID: exists and is not a zombie
  [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
comm_is() {   # comm_is PID NAME1|NAME2...: the process name starts with one of the NAMEs
  local c n; c=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  for n in ${2//|/ }; do [[ "$c" == "$n"* ]] && return 0; done; return 1
}
# stop NAME[|NAME2] PIDFILE: TERM, wait up to 20 s, then KILL; only if the pid's comm matches a NAME
stop() {
  local name=$1 f=$2 pid i
  [ -s "$f" ] || return 0
  pid=$(tr -dc '0-9' <"$f")
  if [ -z "$pid" ] || ! alive "$pid" || ! comm_is "$pid" "$name"; then
    log "${name%%|*}: not running (removing stale $f)"; rm -f "$f"; return 0
  fi
  name=$(cat "/proc/$pid/comm" 2>/dev/null || echo "${name%%|*}")
  kill -TERM "$pid" 2>/dev/null
  for ((i=0; i<40; i++)); do alive "$pid" || break; sleep 0.5; done
  if alive "$pid"; then
    log "$name (pid $pid) ignored TERM for 20 s; sending KILL"; kill -KILL "$pid" 2>/dev/null
    for ((i=0; i<10; i++)); do alive "$pid" || break; sleep 0.5; done
  fi
  if alive "$pid"; then log "ERROR: $name (pid $pid) still alive"; FAILED=1; return 0; fi
  log "stopped $name (pid $pid)"; rm -f "$f"
}

# cancel this cluster's jobs first, so no slurmstepd / job processes outlive slurmd
if [ -s "$D/run/slurmctld.pid" ] && [ "$(readlink -f /etc/slurm/slurm.conf 2>/dev/null)" = "$D/etc/slurm.conf" ]; then
  export SLURM_CONF=/etc/slurm/slurm.conf
  ids=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$ids" ]; then
    log "cancelling jobs: $(echo $ids)"
    timeout 10 scancel $ids 2>/dev/null || true
    for ((i=0; i<30; i++)); do [ -z "$(timeout 5 squeue -h -t PD,R,CG -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
# compute side, controller, accounting, DB, auth
stop slurmd    "$D/run/slurmd.pid"
stop slurmctld "$D/run/slurmctld.pid"
stop slurmdbd  "$D/run/slurmdbd.pid"
stop "mariadbd|mysqld" "$D/run/mariadbd.pid"
stop munged    "$D/run/munged.pid"

if [ "$FAILED" = 0 ]; then
  for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -L "/etc/slurm/$f" ] && [ "$(readlink "/etc/slurm/$f")" = "$D/etc/$f" ]; then rm -f "/etc/slurm/$f"; fi
    if [ -e "/etc/slurm/$f.orig-lotto-slurm" ] && [ ! -e "/etc/slurm/$f" ]; then mv "/etc/slurm/$f.orig-lotto-slurm" "/etc/slurm/$f"; fi
  done
fi
if [ "$PURGE" = 1 ]; then
  if [ "$FAILED" = 0 ]; then rm -rf "$D"; log "purged $D"; else log "not purging $D: a daemon is still alive"; fi
fi
exit "$FAILED"
