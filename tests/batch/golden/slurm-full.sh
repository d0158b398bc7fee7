#!/bin/bash -l
#SBATCH -J sim
#SBATCH -o /home/alice/logs/%x-%j.out
#SBATCH -p normal
#SBATCH -A proj42
#SBATCH -n 1
#SBATCH --cpus-per-task=16
#SBATCH --mem=38147M
#SBATCH -t 01:30:00
#SBATCH --extra-directive

# 43 for a job, 43_2 for task 2 of array job 43 (as squeue and scancel name them)
JOBQUEUE_JOB_ID=${SLURM_ARRAY_TASK_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
JOBQUEUE_JOB_ID=${JOBQUEUE_JOB_ID:-$SLURM_JOB_ID}

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
    --death-timeout 120 --lifetime 4860 --lifetime-stagger 270 --interface ib0 \
    --host 10.0.0.9
