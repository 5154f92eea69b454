#!/usr/bin/env bash
# start-cluster.sh — bring up a real single-node Slurm cluster on loopback for
# lotto's Slurm tests (tests/slurm/) and for trying `snakemake --profile
# tests/slurm/profile` by hand.
#
# Usage:  tests/slurm/start-cluster.sh [STATE_DIR]
#   STATE_DIR  config, state, logs, munge key/socket, MariaDB data and PID files
#              (default: $LOTTO_TEST_SLURM_DIR or /tmp/lotto-slurm). Keep the path
#              short: munge's unix socket lives there (refused above 80 chars).
#
# What it runs (all as root, talking over loopback, with PID files in
# STATE_DIR/run so stop-cluster.sh can stop exactly these processes; MariaDB
# binds 127.0.0.1, the Slurm daemons listen on all interfaces -- Slurm 22.05
# has no bind option -- but need this cluster's private munge key):
#   munged -> mariadbd -> slurmdbd (so `sacct` works, which the Snakemake slurm
#   executor uses for status polling) -> slurmctld -> slurmd (node "localhost",
#   CPUs/sockets/cores as `slurmd -C` reports, fake GPUs declared as GRES).
#
# Fixed names (tests/slurm/profile/config.yaml relies on them):
#   cluster "lottoci", partition "lottoci" (the default partition), account
#   "lotto" (the calling user's default account), node "localhost" with the
#   features "lottoci" and, with GPUs, "fakegpu" (for sbatch -C / constraint).
#
# Environment knobs (all optional; deliberately not LOTTO_SLURM_*, which are
# the site settings read by the real profile slurm/config.yaml):
#   LOTTO_TEST_SLURM_DIR=/tmp/lotto-slurm  default STATE_DIR
#   LOTTO_TEST_SLURM_GPUS=2           number of fake GPUs (gres/gpu) on the node, 0 = none (2: two
#                                     GPU jobs run at once, one per CPU of a 2-core test machine)
#   LOTTO_TEST_SLURM_MEM_MB=          node RealMemory (default: 3/4 of what `slurmd -C` sees)
#   LOTTO_TEST_SLURM_TIMEOUT=90       seconds to wait for each daemon and for the node to be idle
#   LOTTO_TEST_SLURM_PORT_BASE=16917  slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2, mariadb=BASE+3
#   LOTTO_TEST_SLURM_NO_INSTALL=0     1: never call apt-get (exit 77 if something is missing)
#
# Exit codes:
#   0   cluster is up and the node is idle. The last lines on stdout are
#       KEY=VALUE facts (also written to STATE_DIR/cluster.env).
#   77  this machine cannot host the cluster (not root, no apt-get, apt-get
#       failed, packages missing with LOTTO_TEST_SLURM_NO_INSTALL=1). Tests skip
#       on 77 (unless CI=true) and show the message.
#   1   anything else (a daemon did not come up, ...): a real failure.
#
# Side effects outside STATE_DIR:
#   * apt-get install of slurm-wlm, slurmdbd, munge, mariadb-server if missing
#     (services are NOT started by the packages: a temporary policy-rc.d is put
#     in place if none exists)
#   * symlinks /etc/slurm/{slurm.conf,gres.conf,slurmdbd.conf} -> STATE_DIR/etc/
#     (required: snakemake-executor-plugin-slurm-jobstep strips SLURM_CONF and
#     other SLURM_* variables before its in-job `srun`, so the config has to be
#     at the compiled-in default path). Existing regular files are moved aside
#     to *.orig-lotto-slurm.
#
# Idempotent: a second run installs nothing, keeps running daemons and only
# waits for the node to be idle (about 1-2 s).
set -euo pipefail

EX_UNAVAILABLE=77
D="${1:-${LOTTO_TEST_SLURM_DIR:-/tmp/lotto-slurm}}"
CLUSTER=lottoci
PARTITION=lottoci
ACCOUNT=lotto
NGPU="${LOTTO_TEST_SLURM_GPUS:-2}"
TIMEOUT="${LOTTO_TEST_SLURM_TIMEOUT:-90}"
PB="${LOTTO_TEST_SLURM_PORT_BASE:-16917}"
NO_INSTALL="${LOTTO_TEST_SLURM_NO_INSTALL:-0}"
CTLD_PORT=$PB; SLURMD_PORT=$((PB+1)); DBD_PORT=$((PB+2)); DB_PORT=$((PB+3))
NODE=localhost

log() { printf '[lotto-slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
unavailable() { log "UNAVAILABLE: $*"; exit "$EX_UNAVAILABLE"; }
T_START=$(date +%s)

# ------------------------------------------------------------------ preconditions
[ "$(id -u)" = 0 ] || unavailable "must run as root (starts slurmctld/slurmd/slurmdbd/munged/mariadbd as root, writes /etc/slurm); current uid $(id -u)"
case "$D" in /*) ;; *) D="$PWD/$D";; esac
mkdir -p "$D"
D="$(cd "$D" && pwd)"
[ ${#D} -le 80 ] || unavailable "STATE_DIR '$D' is too long for munge's socket path; use a shorter one (e.g. /tmp/lotto-slurm)"
mkdir -p "$D"/{etc,state,spool,log,run,munge,fakegpu}
chmod 755 "$D" "$D/munge" "$D/log" "$D/run"   # munged refuses group/other-writable dirs

# ------------------------------------------------------------------ install
need=()
command -v munged     >/dev/null 2>&1 || need+=(munge)
{ command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1; } || need+=(slurm-wlm)
command -v slurmdbd   >/dev/null 2>&1 || need+=(slurmdbd)
{ command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1; } || need+=(mariadb-server)
if [ ${#need[@]} -gt 0 ]; then
  [ "$NO_INSTALL" != 1 ] || unavailable "missing packages (${need[*]}) and LOTTO_TEST_SLURM_NO_INSTALL=1"
  command -v apt-get >/dev/null 2>&1 || unavailable "missing packages (${need[*]}) and apt-get is not available to install them (Debian/Ubuntu only)"
  log "installing with apt-get: ${need[*]}"
  t0=$(date +%s)
  # keep the packages' maintainer scripts from starting their own system
  # services (munge on /etc/munge, mariadb on :3306, slurm*): we run our own.
  POLICY=/usr/sbin/policy-rc.d; OUR_POLICY=0
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from lotto tests/slurm/start-cluster.sh\nexit 101\n' >"$POLICY"; chmod 755 "$POLICY"; OUR_POLICY=1
  fi
  rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need[@]}"; } \
      >"$D/log/apt-install.log" 2>&1 || rc=$?
  [ "$OUR_POLICY" = 0 ] || rm -f "$POLICY"
  if [ "$rc" != 0 ]; then
    tail -20 "$D/log/apt-install.log" >&2
    unavailable "apt-get install ${need[*]} failed (rc=$rc, log $D/log/apt-install.log)"
  fi
  log "installed in $(( $(date +%s) - t0 ))s"
fi
MARIADBD=$(command -v mariadbd || command -v mysqld)
MARIADB=$(command -v mariadb || command -v mysql)
INSTALL_DB=$(command -v mariadb-install-db || command -v mysql_install_db)
MARIADB_COMM=$(basename "$MARIADBD")

# ------------------------------------------------------------------ helpers
# pid_alive PIDFILE NAME: the pid in PIDFILE is a live (non-zombie) process whose comm starts with NAME
pid_alive() {
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  case "$(cat "/proc/$pid/comm")" in "$name"*) return 0;; *) return 1;; esac
}
wait_for() {   # wait_for CMD... : retry CMD every 0.5 s for up to TIMEOUT s
  local end=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

# ------------------------------------------------------------------ another cluster?
# /etc/slurm/slurm.conf is global: refuse to hijack it from a different live cluster.
if [ -e /etc/slurm/slurm.conf ]; then
  cur=$(readlink -f /etc/slurm/slurm.conf)
  if [ "$cur" != "$D/etc/slurm.conf" ] && timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    die "another Slurm controller answers for /etc/slurm/slurm.conf (-> $cur); stop it first (its own stop script, or tests/slurm/stop-cluster.sh DIR)"
  fi
fi

# ------------------------------------------------------------------ munge
MSOCK="$D/munge/munge.socket.2"
if [ ! -s "$D/munge/munge.key" ]; then
  if command -v mungekey >/dev/null 2>&1; then mungekey -c -k "$D/munge/munge.key" >/dev/null
  else dd if=/dev/urandom of="$D/munge/munge.key" bs=1 count=1024 status=none; fi
fi
chmod 600 "$D/munge/munge.key"
if pid_alive "$D/run/munged.pid" munged; then
  log "munged already running (pid $(cat "$D/run/munged.pid"))"
else
  rm -f "$MSOCK" "$MSOCK.lock"
  munged --key-file="$D/munge/munge.key" --socket="$MSOCK" --pid-file="$D/run/munged.pid" \
         --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed" \
    || die "munged failed to start (see $D/log/munged.log)"
  wait_for bash -c "munge -S '$MSOCK' -n | unmunge -S '$MSOCK'" || die "munged not answering (see $D/log/munged.log)"
  log "started munged (pid $(cat "$D/run/munged.pid"), socket $MSOCK)"
fi

# ------------------------------------------------------------------ config
HW=$(slurmd -C | head -1)     # NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=...
DET_MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
MEM="${LOTTO_TEST_SLURM_MEM_MB:-$(( DET_MEM * 3 / 4 ))}"
TOPO=$(grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$HW") \
  || die "cannot parse 'slurmd -C' output: $HW"
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$TOPO")

GRES_NODE=""; GRES_TYPES=""; ACC_TRES=""; GPU_FILES=(); FEATURES=lottoci
: >"$D/etc/gres.conf.new"
if [ "$NGPU" -gt 0 ]; then
  # gres/gpu wants character devices (regular files are refused): make
  # /dev/null look-alikes (major 1, minor 3). In a container where mknod is
  # not allowed fall back to existing harmless character devices.
  for ((i=0; i<NGPU; i++)); do
    f="$D/fakegpu/nvidia$i"
    [ -c "$f" ] || { rm -f "$f"; mknod -m 666 "$f" c 1 3 2>/dev/null || true; }
    [ -c "$f" ] && GPU_FILES+=("$f")
  done
  if [ ${#GPU_FILES[@]} -ne "$NGPU" ]; then
    cand=(/dev/null /dev/zero /dev/full /dev/urandom /dev/random)
    [ "$NGPU" -le ${#cand[@]} ] || die "mknod refused and only ${#cand[@]} fallback devices for $NGPU GPUs"
    GPU_FILES=("${cand[@]:0:NGPU}")
    log "mknod refused; using ${GPU_FILES[*]} as fake GPU device files"
  fi
  for f in "${GPU_FILES[@]}"; do echo "NodeName=$NODE Name=gpu File=$f" >>"$D/etc/gres.conf.new"; done
  GRES_NODE="Gres=gpu:$NGPU"; GRES_TYPES="GresTypes=gpu"; ACC_TRES="AccountingStorageTRES=gres/gpu"
  FEATURES="$FEATURES,fakegpu"
fi

cat >"$D/etc/slurm.conf.new" <<EOF
# generated by lotto tests/slurm/start-cluster.sh: single-node test cluster on loopback
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: works in containers/VMs without a delegated cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# keep finished jobs visible to squeue/scontrol for 5 min
MinJobAge=300
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# munge socket for the slurmctld -> slurmdbd connection (AuthInfo is not used for it)
AccountingStoragePass=$MSOCK
AccountingStorageEnforce=associations
# keep the job comment (the Snakemake plugin puts "rule_<name>[_wildcards_...]" there) for sacct -o Comment
AccountingStoreFlags=job_comment
$ACC_TRES
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 $TOPO RealMemory=$MEM $GRES_NODE Features=$FEATURES State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$D/etc/slurmdbd.conf.new" <<EOF
# generated by lotto tests/slurm/start-cluster.sh
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MSOCK
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=lottoslurm
StorageLoc=slurm_acct_db
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
DebugLevel=info
EOF

CONF_CHANGED=0
for f in slurm.conf gres.conf slurmdbd.conf; do
  if cmp -s "$D/etc/$f.new" "$D/etc/$f" 2>/dev/null; then rm -f "$D/etc/$f.new"
  else CONF_CHANGED=1; mv "$D/etc/$f.new" "$D/etc/$f"; fi
done
chmod 644 "$D/etc/slurm.conf" "$D/etc/gres.conf"; chmod 600 "$D/etc/slurmdbd.conf"

mkdir -p /etc/slurm
for f in slurm.conf gres.conf slurmdbd.conf; do
  if [ -e "/etc/slurm/$f" ] && [ ! -L "/etc/slurm/$f" ]; then
    mv "/etc/slurm/$f" "/etc/slurm/$f.orig-lotto-slurm"; log "moved existing /etc/slurm/$f to /etc/slurm/$f.orig-lotto-slurm"
  fi
  [ "$(readlink "/etc/slurm/$f" 2>/dev/null)" = "$D/etc/$f" ] || { ln -sfn "$D/etc/$f" "/etc/slurm/$f"; log "linked /etc/slurm/$f -> $D/etc/$f"; }
done
export SLURM_CONF=/etc/slurm/slurm.conf

# ------------------------------------------------------------------ MariaDB + slurmdbd
DB="$D/mysql"; DBSOCK="$DB/mysqld.sock"
mkdir -p "$DB"
if [ ! -d "$DB/data/mysql" ]; then
  "$INSTALL_DB" --user=root --datadir="$DB/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$D/log/mariadb-install.log" 2>&1 \
    || { tail "$D/log/mariadb-install.log" >&2; die "mariadb-install-db failed (see $D/log/mariadb-install.log)"; }
  log "initialised MariaDB data dir $DB/data"
fi
if pid_alive "$D/run/mariadbd.pid" "$MARIADB_COMM"; then
  log "mariadbd already running (pid $(cat "$D/run/mariadbd.pid"))"
else
  setsid nohup "$MARIADBD" --no-defaults --user=root --datadir="$DB/data" --socket="$DBSOCK" \
    --pid-file="$D/run/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --log-error="$D/log/mariadb.err" --innodb-buffer-pool-size=64M \
    --innodb-lock-wait-timeout=900 >"$D/log/mariadbd.stdout" 2>&1 </dev/null &
  wait_for "$MARIADB" --no-defaults -S "$DBSOCK" -u root -e 'select 1' \
    || die "mariadbd did not come up (see $D/log/mariadb.err)"
  log "started mariadbd (pid $(cat "$D/run/mariadbd.pid"), port $DB_PORT)"
fi
"$MARIADB" --no-defaults -S "$DBSOCK" -u root -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lottoslurm';
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'lottoslurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  FLUSH PRIVILEGES;" || die "could not create the slurm DB user"

if pid_alive "$D/run/slurmdbd.pid" slurmdbd; then
  log "slurmdbd already running (pid $(cat "$D/run/slurmdbd.pid"))"
else
  slurmdbd || die "slurmdbd failed to start (see $D/log/slurmdbd.log)"   # daemonizes, writes PidFile
  wait_for sacctmgr -n list cluster || die "slurmdbd not answering (see $D/log/slurmdbd.log)"
  log "started slurmdbd (pid $(cat "$D/run/slurmdbd.pid"), port $DBD_PORT)"
fi
U=$(id -un)
[ -n "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ] \
  || { sacctmgr -i add cluster "$CLUSTER" >/dev/null; log "sacctmgr: added cluster $CLUSTER"; }
[ -n "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ] \
  || { sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=lotto-tests Organization=lotto >/dev/null; log "sacctmgr: added account $ACCOUNT"; }
[ -n "$(sacctmgr -n -P list assoc user="$U" account="$ACCOUNT" cluster="$CLUSTER" format=account)" ] \
  || { sacctmgr -i add user "$U" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null; log "sacctmgr: associated user $U with account $ACCOUNT"; }
sacctmgr -i modify user "$U" set DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true

# ------------------------------------------------------------------ slurmctld + slurmd
if pid_alive "$D/run/slurmctld.pid" slurmctld; then
  log "slurmctld already running (pid $(cat "$D/run/slurmctld.pid"))"
  [ "$CONF_CHANGED" = 0 ] || log "WARNING: the config changed while the cluster runs; run stop-cluster.sh and start again"
else
  slurmctld || die "slurmctld failed to start (see $D/log/slurmctld.log)"   # daemonizes
  wait_for scontrol ping || die "slurmctld not answering (see $D/log/slurmctld.log)"
  log "started slurmctld (pid $(cat "$D/run/slurmctld.pid"), port $CTLD_PORT)"
fi
if pid_alive "$D/run/slurmd.pid" slurmd; then
  log "slurmd already running (pid $(cat "$D/run/slurmd.pid"))"
else
  slurmd -N "$NODE" || die "slurmd failed to start (see $D/log/slurmd.log)"   # daemonizes
  wait_for pid_alive "$D/run/slurmd.pid" slurmd || die "slurmd did not start (see $D/log/slurmd.log)"
  log "started slurmd (pid $(cat "$D/run/slurmd.pid"), port $SLURMD_PORT, $TOPO, RealMemory=$MEM, gpus=$NGPU)"
fi

# ------------------------------------------------------------------ wait for the node
end=$(( $(date +%s) + TIMEOUT )); resumed=0
while :; do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated|completing) break;;
    *drain*|*down*|inval*|*fail*)
      # stale state kept in StateSaveLocation from an earlier run: resume once
      if [ $resumed = 0 ]; then
        log "node state '$st' ($(sinfo -h -n "$NODE" -o %E)); resuming it"
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true; resumed=1
      fi;;
  esac
  if [ "$(date +%s)" -ge "$end" ]; then
    sinfo -N -o '%N %T %E' >&2 || true
    tail -20 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2 || true
    die "node not idle after ${TIMEOUT}s (state '$st')"
  fi
  sleep 0.5
done
sinfo -o '%P %a %D %T %N %c %m %G' >&2

cat >"$D/cluster.env.new" <<EOF
STATE_DIR=$D
CLUSTER=$CLUSTER
PARTITION=$PARTITION
ACCOUNT=$ACCOUNT
NODE=$NODE
CPUS=$CPUS
MEM_MB=$MEM
GPUS=$NGPU
SLURM_CONF=/etc/slurm/slurm.conf
EOF
mv "$D/cluster.env.new" "$D/cluster.env"
log "cluster '$CLUSTER' ready in $(( $(date +%s) - T_START ))s (state dir $D, partition $PARTITION, account $ACCOUNT, cpus $CPUS, gpus $NGPU)"
cat "$D/cluster.env"
