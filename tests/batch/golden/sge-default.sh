#!/usr/bin/env bash
#$ -N jobqueue-worker
#$ -cwd
#$ -j y
#$ -o /home/alice/logs/
#$ -pe smp 4
#$ -l h_rt=00:30:00
#$ -l mem_free=3815M

# Jobs started as root get no TMPDIR from Grid Engine, only TMP.
export TMPDIR=${TMPDIR:-$TMP}
# 9 for a job, 9.3 for task 3 of array job 9 (as qstat and qdel name them)
if [ "${SGE_TASK_ID:-undefined}" != undefined ]; then
    JOBQUEUE_JOB_ID=$JOB_ID.$SGE_TASK_ID
else
    JOBQUEUE_JOB_ID=$JOB_ID
fi

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
    --nthreads 1 --nworkers 4 --memory-limit 4000000000 \
    --name "jobqueue-worker-${JOBQUEUE_JOB_ID}" --death-timeout 60 --lifetime 1620 \
    --lifetime-stagger 90
