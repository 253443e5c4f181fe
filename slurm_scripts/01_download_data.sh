#!/bin/bash
#SBATCH --job-name=lstv_download_data
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 01: the RSNA 2024 Lumbar Spine competition data, through the Kaggle API, into
# $LSTV_DATA_DIR (default data/raw): train_images/, train_series_descriptions.csv,
# train_label_coordinates.csv. Needs ~/.kaggle/kaggle.json, accepted competition rules, internet
# on the node (or run it on the login node: bash slurm_scripts/01_download_data.sh).
# Idempotent: a finished download is skipped (data/raw/.download_complete). Resumable: the
# Kaggle CLI continues a partial zip, and extraction skips files already unpacked.
set -euo pipefail
# Find the project: LSTV_PROJECT_DIR, else this file's folder; under sbatch this file runs as a
# copy in Slurm's spool folder, so then the path Slurm recorded, else the submit folder. Then
# `lstv slurm download_data` (src/lstv/slurm.py) does the work, in the plain python3 of LSTV_HOST_PYTHON.
dir=${LSTV_PROJECT_DIR:-$(dirname "$0")/..}
[[ -f $dir/src/lstv/slurm.py ]] || dir=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's|^ *Command=\(.*\)/slurm_scripts/.*|\1|p') || true
[[ -f $dir/src/lstv/slurm.py ]] || dir=${SLURM_SUBMIT_DIR:-.}
PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}" exec "${LSTV_HOST_PYTHON:-python3}" -m lstv slurm download_data "$@"
