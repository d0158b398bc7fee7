#!/usr/bin/env bash
# Create benchmarks/.venv-dask: a virtual environment with a pinned dask.distributed (and dask's
# array and dataframe extras), used by compare.py as the baseline. Idempotent: does nothing if the pinned version is already there.
#
#   bash benchmarks/setup.sh                 # uses python3 (or $PYTHON)
#   DASK_VERSION=2026.7.1 bash benchmarks/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${DASK_VENV:-$here/.venv-dask}"
version="${DASK_VERSION:-2026.8.0}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && \
   [ "$("$venv/bin/python" -c 'import distributed, dask.dataframe; print(distributed.__version__)' 2>/dev/null)" = "$version" ]; then
    echo "dask.distributed $version already in $venv"
    exit 0
fi

echo "creating $venv with dask[distributed,array,dataframe]==$version ($("$python" --version 2>&1))"
if ! "$python" -m venv "$venv"; then
    echo "setup.sh: '$python -m venv' failed; on Debian: apt-get install python3-venv" >&2
    exit 1
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# array and dataframe for the dask-* workloads (numpy, pandas, pyarrow)
"$venv/bin/python" -m pip install --quiet "dask[distributed,array,dataframe]==$version" \
    "distributed==$version" psutil
"$venv/bin/python" -c 'import dask.dataframe, distributed, psutil; print("installed dask", dask.__version__, "distributed", distributed.__version__)'
