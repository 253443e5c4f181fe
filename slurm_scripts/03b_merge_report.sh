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

out="$LSTV_OUTPUT_DIR/prod"
lstv_banner "03b merge shards of $out/shards"
merge_args=(--shards_dir "$out/shards" --output_dir "$out")
if [[ -n "${LSTV_NUM_PARTS:-}" ]]; then
  merge_args+=(--num_parts "$LSTV_NUM_PARTS")
fi
lstv_run merge "${merge_args[@]}"
lstv_run report --csv "$out/lstv_uncertainty_metrics.csv" --output "$out/report.html" \
  --data_dir "$LSTV_INPUT_DIR"
lstv_log "done: $out/lstv_uncertainty_metrics.csv and $out/report.html"
