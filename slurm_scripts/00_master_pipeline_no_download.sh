#!/bin/bash
#SBATCH --job-name=lstv_master
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# The pipeline without the downloads, for data and model already in place (or elsewhere:
# LSTV_DATA_DIR, LSTV_CHECKPOINT, LSTV_VALID_IDS): 02 trial -> 03 prod array -> 03b merge.
#   bash slurm_scripts/00_master_pipeline_no_download.sh
# Settings: slurm_scripts/README.md.
set -euo pipefail

# Find the project. Under sbatch this file runs as a copy in Slurm's spool folder, so its own
# location says nothing: ask Slurm for the submitted path, then try the submit folder.
submitted=$(scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null |
  sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1) || true
for PROJECT_DIR in "${LSTV_PROJECT_DIR:-}" "$(dirname "${BASH_SOURCE[0]}")/.." \
  "$(dirname "${submitted:-.}")/.." "${SLURM_SUBMIT_DIR:-}" ""; do
  [[ -f $PROJECT_DIR/slurm_scripts/common.sh ]] && break
done
PROJECT_DIR=$(cd "${PROJECT_DIR:?cannot find the project folder; set LSTV_PROJECT_DIR}" && pwd)
# shellcheck source=slurm_scripts/common.sh
source "$PROJECT_DIR/slurm_scripts/common.sh"

LSTV_SKIP_DOWNLOAD=1 exec bash "$PROJECT_DIR/slurm_scripts/00_master_pipeline.sh" "$@"
