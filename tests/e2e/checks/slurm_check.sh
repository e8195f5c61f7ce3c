#!/bin/sh
# A study through Slurm, for real: dask-jobqueue's SLURMCluster submits tuner's Dask workers as
# Slurm jobs on a one-node Slurm started from Debian's packages, a replay study runs its trials
# on them, and the jobs are gone afterwards.
#
#   apt-get install -y slurm-wlm munge     # once, as root (Debian 12: Slurm 22.05, MUNGE 0.5.15)
#   sh tests/e2e/checks/slurm_check.sh           # from the repository root, as root
#
# Where no Slurm controller answers, the script starts one for this machine: munged, then
# slurmctld and slurmd with the configuration below in $SLURM_CONF (default
# /tmp/tuner-slurm/slurm.conf: one node, this host, all its CPUs, no cgroups, so that it runs in
# a container too). A Slurm that already answers is used as it is. Without Slurm's commands the
# script says so and exits 0 (nothing to check).
#
# Settings (environment): TUNER (the tuner command, default .venv/bin/tuner), WORKERS (worker
# jobs, default 2), TRIALS (default 8), SCALE (seconds slept per recorded GPU-second, 0.05).
# dask-jobqueue reads its job settings from its own configuration; here from the environment
# (DASK_JOBQUEUE__SLURM__*), one core and 2 GB per worker job.
set -eu

TUNER=${TUNER:-.venv/bin/tuner}
WORKERS=${WORKERS:-2}
TRIALS=${TRIALS:-8}
SCALE=${SCALE:-0.05}
STATE=${STATE:-/tmp/tuner-slurm}

if ! command -v sbatch >/dev/null 2>&1 || ! command -v slurmctld >/dev/null 2>&1; then
    echo "skip: Slurm is not installed here (apt-get install -y slurm-wlm munge)"
    exit 0
fi

if [ -z "${SLURM_CONF:-}" ] && [ ! -f /etc/slurm/slurm.conf ]; then
    SLURM_CONF=$STATE/slurm.conf
    export SLURM_CONF
fi
if ! scontrol ping 2>/dev/null | grep -q UP; then
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
    cat >"$SLURM_CONF" <<EOF
ClusterName=tuner
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    slurmctld
    slurmd
    for _ in $(seq 30); do
        scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T | grep -q idle && break
        sleep 1
    done
    echo "started a one-node Slurm ($SLURM_CONF):"
fi
sinfo

export DASK_JOBQUEUE__SLURM__CORES=1
export DASK_JOBQUEUE__SLURM__MEMORY=2GB
export DASK_JOBQUEUE__SLURM__WALLTIME=00:30:00
export DASK_JOBQUEUE__SLURM__LOG_DIRECTORY="$STATE/jobs"
run=$(mktemp -d)
profiles=$(mktemp -d)
start=$(date +%s)
"$TUNER" tune --engine replay:benchmarks/data/h100-hf-tiny-llama-humaneval.json \
    --cluster slurm --workers "$WORKERS" --trials "$TRIALS" --replay-time-scale "$SCALE" \
    --run-dir "$run/study" --profiles-dir "$profiles" --quiet
echo "study through Slurm: $(($(date +%s) - start)) s"

# Where the trials ran: the Slurm jobs' Dask workers, by name.
python3 - "$run/study/trials.jsonl" <<'EOF'
import collections, json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
where = collections.Counter(t["placement"]["worker"] for t in lines if t.get("placement"))
print(f"{len(lines)} trials; by worker: {dict(where)}")
assert len(where) >= 1 and sum(where.values()) == len(lines)
EOF
ls "$profiles"/*/*/*.json
echo "worker jobs run (their logs): $(ls "$STATE/jobs" | sort | tr '\n' ' ')"

# Torn down: no worker job left in the queue.
sleep 2
left=$(squeue -h -n dask-worker | wc -l)
echo "worker jobs left in the queue: $left"
test "$left" -eq 0
echo "slurm check passed"
