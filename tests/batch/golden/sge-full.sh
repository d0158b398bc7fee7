#!/bin/bash -l
#$ -N sim
#$ -cwd
#$ -j y
#$ -o /home/alice/logs/
#$ -q normal
#$ -P proj42
#$ -pe smp 8
#$ -l h_rt=00:01:30
#$ -l h_vmem=4G,mem_free=4G
#$ --extra-directive

# Jobs started as root get no TMPDIR from Grid Engine, only TMP.
export TMPDIR=${TMPDIR:-$TMP}
# 9 for a job, 9.3 for task 3 of array job 9 (as qstat and qdel name them)
if [ "${SGE_TASK_ID:-undefined}" != undefined ]; then
    JOBQUEUE_JOB_ID=$JOB_ID.$SGE_TASK_ID
else
    JOBQUEUE_JOB_ID=$JOB_ID
fi

module load python/3.11
source ~/venv/bin/activate
mkdir -p /scratch/alice && export TMPDIR=/scratch/alice

# The token authenticates the workers to the scheduler. It is read from a file only its owner can
# read: it is never on a command line (visible in ps) and never in this script (kept by the
# batch system, shown by its commands).
if ! JOBQUEUE_TOKEN=$(cat /home/alice/.jobqueue/c.token); then
    echo "jobqueue: cannot read the cluster's token file" /home/alice/.jobqueue/c.token "on $(hostname):" \
         "is it on a filesystem the compute nodes share, and is the cluster still running?" >&2
    exit 1
fi
export JOBQUEUE_TOKEN
exec /opt/conda/bin/python3 -m jobqueue worker tcp://10.1.2.3:8786 \
    --nthreads 4 --nworkers 2 --memory-limit 16000000000 --name "sim-${JOBQUEUE_JOB_ID}" \
    --death-timeout 120 --lifetime 60 --lifetime-stagger 15 --interface ib0 \
    --host 10.0.0.9
