#!/bin/bash
#SBATCH --job-name=lstv_download_model
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=00:30:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 01b: hengck23's localizer from the Kaggle dataset hengck23/rsna2024-demo-workflow
# (7th place, RSNA 2024 Lumbar Spine): 00002484.pth -> models/point_net_checkpoint.pth and
# valid_id.npy (the 283 hold-out study IDs) -> models/valid_id.npy, checked before they are
# put in place (size, strict load into the point net, integer IDs). Needs ~/.kaggle/kaggle.json
# and internet (or run it on the login node: bash slurm_scripts/01b_download_model.sh).
# Idempotent: files that pass the check are not fetched again.
set -euo pipefail
# Find the project: LSTV_PROJECT_DIR, else this file's folder; under sbatch this file runs as a
# copy in Slurm's spool folder, so then the path Slurm recorded, else the submit folder. Then
# `lstv slurm download_model` (src/lstv/slurm.py) does the work, in the plain python3 of LSTV_HOST_PYTHON.
dir=${LSTV_PROJECT_DIR:-$(dirname "$0")/..}
[[ -f $dir/src/lstv/slurm.py ]] || dir=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's|^ *Command=\(.*\)/slurm_scripts/.*|\1|p') || true
[[ -f $dir/src/lstv/slurm.py ]] || dir=${SLURM_SUBMIT_DIR:-.}
PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}" exec "${LSTV_HOST_PYTHON:-python3}" -m lstv slurm download_model "$@"
