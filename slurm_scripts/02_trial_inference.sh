#!/bin/bash
#SBATCH --job-name=lstv_trial
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 02: trial inference on LSTV_N_TRIAL (default 10) randomly chosen hold-out studies, then
# the HTML report. Results: $LSTV_OUTPUT_DIR/trial/. A rerun resumes where the last one stopped.
# Settings and resources: slurm_scripts/README.md.
#
#   sbatch slurm_scripts/02_trial_inference.sh          (from the project folder)
set -euo pipefail
# Find the project: LSTV_PROJECT_DIR, else this file's folder; under sbatch this file runs as a
# copy in Slurm's spool folder, so then the path Slurm recorded, else the submit folder. Then
# `lstv slurm trial` (src/lstv/slurm.py) does the work, in the plain python3 of LSTV_HOST_PYTHON.
dir=${LSTV_PROJECT_DIR:-$(dirname "$0")/..}
[[ -f $dir/src/lstv/slurm.py ]] || dir=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's|^ *Command=\(.*\)/slurm_scripts/.*|\1|p') || true
[[ -f $dir/src/lstv/slurm.py ]] || dir=${SLURM_SUBMIT_DIR:-.}
PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}" exec "${LSTV_HOST_PYTHON:-python3}" -m lstv slurm trial "$@"
