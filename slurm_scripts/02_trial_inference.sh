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

lstv_banner "02 trial inference: $LSTV_N_TRIAL studies"
lstv_require_inputs
out="$LSTV_OUTPUT_DIR/trial"
lstv_infer_args
lstv_run infer "${LSTV_INFER_ARGS[@]}" --mode trial --n_trial "$LSTV_N_TRIAL" --output_dir "$out"
lstv_run report --csv "$out/lstv_uncertainty_metrics.csv" --output "$out/report.html" \
  --data_dir "$LSTV_INPUT_DIR"
lstv_log "done: $out/lstv_uncertainty_metrics.csv and $out/report.html"
