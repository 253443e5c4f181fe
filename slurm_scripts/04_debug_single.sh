#!/bin/bash
#SBATCH --job-name=lstv_debug
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=00:30:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# Step 04: one study with every picture (input slice, per-level heatmaps, points) for checking
# by eye. Results: $LSTV_OUTPUT_DIR/debug/<study_id>/. Settings: slurm_scripts/README.md.
#
#   sbatch slurm_scripts/04_debug_single.sh <study_id>   (or LSTV_DEBUG_STUDY_ID=<study_id>)
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

study_id=${1:-${LSTV_DEBUG_STUDY_ID:-}}
[[ "$study_id" =~ ^[0-9]+$ ]] ||
  lstv_die "usage: sbatch slurm_scripts/04_debug_single.sh <study_id> (a numeric RSNA study ID)"
lstv_banner "04 debug: study $study_id"
lstv_require_inputs
out="$LSTV_OUTPUT_DIR/debug/$study_id"
lstv_infer_args
lstv_run infer "${LSTV_INFER_ARGS[@]}" --mode debug --debug_study_id "$study_id" \
  --save_heatmaps --output_dir "$out"
lstv_run report --csv "$out/lstv_uncertainty_metrics.csv" --output "$out/report.html" \
  --data_dir "$LSTV_INPUT_DIR"
lstv_log "done: figures in $out/visualizations, report $out/report.html"
