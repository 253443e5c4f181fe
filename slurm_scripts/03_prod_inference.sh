#!/bin/bash
#SBATCH --job-name=lstv_prod
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 03: every hold-out study, split over a job array: task i of N runs shard i
# (lstv infer --num_parts N --part_id i) into $LSTV_OUTPUT_DIR/prod/shards/part_iii/, then the
# job 03b_merge_report.sh joins the shards into $LSTV_OUTPUT_DIR/prod/ and renders the report.
# A requeued or rerun task resumes: studies already in its shard's CSV are skipped.
#
#   bash slurm_scripts/03_prod_inference.sh         submit the array (LSTV_NUM_PARTS tasks,
#                                                   default 8) and the merge job after it
#   LSTV_NUM_PARTS=8 LSTV_ARRAY_INDICES=3 bash slurm_scripts/03_prod_inference.sh
#                                                   rerun task 3 of 8, then merge again
#   sbatch --array=0-7 slurm_scripts/03_prod_inference.sh    the array alone (merge yourself)
# Settings and resources: slurm_scripts/README.md.
set -euo pipefail
# Find the project: LSTV_PROJECT_DIR, else this file's folder; under sbatch this file runs as a
# copy in Slurm's spool folder, so then the path Slurm recorded, else the submit folder. Then
# `lstv slurm prod` (src/lstv/slurm.py) does the work, in the plain python3 of LSTV_HOST_PYTHON.
dir=${LSTV_PROJECT_DIR:-$(dirname "$0")/..}
[[ -f $dir/src/lstv/slurm.py ]] || dir=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's|^ *Command=\(.*\)/slurm_scripts/.*|\1|p') || true
[[ -f $dir/src/lstv/slurm.py ]] || dir=${SLURM_SUBMIT_DIR:-.}
PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}" exec "${LSTV_HOST_PYTHON:-python3}" -m lstv slurm prod "$@"
