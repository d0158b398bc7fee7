#!/usr/bin/env bash
#PBS -N jobqueue-worker
#PBS -l select=1:ncpus=4:mem=15259mb
#PBS -l walltime=00:30:00
#PBS -j oe

# 16 for job 16.server; SLURM_JOB_ID when qsub is the Torque-compatible wrapper over SLURM,
# which sets no PBS_* variables.
JOBQUEUE_JOB_ID=${PBS_JOBID:-$SLURM_JOB_ID}
JOBQUEUE_JOB_ID=${JOBQUEUE_JOB_ID%%.*}

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
