#!/bin/bash
#SBATCH --job-name=lstv_merge
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 03b: join the shards of 03_prod_inference.sh ($LSTV_OUTPUT_DIR/prod/shards/part_*) into
# $LSTV_OUTPUT_DIR/prod/ and render the report. Fails, naming the part, when a shard is missing,
# duplicated or unfinished. 03_prod_inference.sh submits it after the array (afterok); to merge
# by hand: LSTV_NUM_PARTS=8 sbatch slurm_scripts/03b_merge_report.sh
# Settings and resources: slurm_scripts/README.md.
set -euo pipefail
# Find the project: LSTV_PROJECT_DIR, else this file's folder; under sbatch this file runs as a
# copy in Slurm's spool folder, so then the path Slurm recorded, else the submit folder. Then
# `lstv slurm merge` (src/lstv/slurm.py) does the work, in the plain python3 of LSTV_HOST_PYTHON.
dir=${LSTV_PROJECT_DIR:-$(dirname "$0")/..}
[[ -f $dir/src/lstv/slurm.py ]] || dir=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's|^ *Command=\(.*\)/slurm_scripts/.*|\1|p') || true
[[ -f $dir/src/lstv/slurm.py ]] || dir=${SLURM_SUBMIT_DIR:-.}
PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}" exec "${LSTV_HOST_PYTHON:-python3}" -m lstv slurm merge "$@"
