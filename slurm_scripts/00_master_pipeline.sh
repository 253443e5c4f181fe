#!/bin/bash
#SBATCH --job-name=lstv_master
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err
#
# The whole pipeline as chained jobs, each starting only if the one before succeeded
# (--dependency=afterok):
#   01 download data + 01b download model -> 02 trial (10 studies) -> 03 prod array
#   -> 03b merge + report        (and 04 debug of LSTV_DEBUG_STUDY_ID after 02, when set)
# Run it on the login node; it only submits and prints the job IDs:
#   bash slurm_scripts/00_master_pipeline.sh
# (sbatch slurm_scripts/00_master_pipeline.sh works too.) Settings: slurm_scripts/README.md.
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

trial_dependency=""
if [[ "${LSTV_SKIP_DOWNLOAD:-0}" == 1 ]]; then
  lstv_log "skipping the downloads (LSTV_SKIP_DOWNLOAD=1)"
  lstv_require_inputs
else
  # Fail here, on the login node, rather than in a queued job an hour from now.
  lstv_require_kaggle
  data_id=$(lstv_submit cpu 01_download_data.sh)
  model_id=$(lstv_submit cpu 01b_download_model.sh)
  echo "01_download_data.sh      job $data_id"
  echo "01b_download_model.sh    job $model_id"
  trial_dependency="afterok:$data_id:$model_id"
fi

trial_opts=()
[[ -n "$trial_dependency" ]] && trial_opts=(--dependency "$trial_dependency")
trial_id=$(lstv_submit gpu 02_trial_inference.sh "${trial_opts[@]}")
echo "02_trial_inference.sh    job $trial_id"

submitted=$(lstv_submit_prod "afterok:$trial_id")
read -r array_id merge_id <<<"$submitted"
echo "03_prod_inference.sh     array job $array_id (${LSTV_NUM_PARTS:-8} shards)"
echo "03b_merge_report.sh      job $merge_id"

ids=("${data_id:-}" "${model_id:-}" "$trial_id" "$array_id" "$merge_id")
if [[ -n "${LSTV_DEBUG_STUDY_ID:-}" ]]; then
  debug_id=$(lstv_submit gpu 04_debug_single.sh --dependency "afterok:$trial_id" -- \
    "$LSTV_DEBUG_STUDY_ID")
  echo "04_debug_single.sh       job $debug_id (study $LSTV_DEBUG_STUDY_ID)"
  ids+=("$debug_id")
fi
# One line for scripts: the IDs in submission order.
echo "job ids: $(printf '%s ' "${ids[@]}" | xargs)"
echo "follow with: squeue -u ${USER:-$(id -un)}; logs in $LSTV_LOG_DIR; results in $LSTV_OUTPUT_DIR"
