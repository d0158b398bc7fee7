#!/bin/bash -l
#PBS -N sim
#PBS -q normal
#PBS -A proj42
#PBS -l select=1:ncpus=8:mem=30gb:ngpus=1
#PBS -l walltime=00:01:30
#PBS -j oe
#PBS --extra-directive

# 16 for job 16.server; SLURM_JOB_ID when qsub is the Torque-compatible wrapper over SLURM,
# which sets no PBS_* variables.
JOBQUEUE_JOB_ID=${PBS_JOBID:-$SLURM_JOB_ID}
JOBQUEUE_JOB_ID=${JOBQUEUE_JOB_ID%%.*}

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
