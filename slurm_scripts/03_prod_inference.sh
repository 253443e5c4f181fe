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

if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
  # Not an array task: act as the submitter of the array and of the merge job.
  submitted=$(lstv_submit_prod "")
  read -r array_id merge_id <<<"$submitted"
  echo "submitted 03_prod_inference.sh array job $array_id" \
    "(tasks ${LSTV_ARRAY_INDICES:-0-$((${LSTV_NUM_PARTS:-8} - 1))})" \
    "and 03b_merge_report.sh job $merge_id"
  echo "job ids: $array_id $merge_id"
  exit 0
fi

part_id=$SLURM_ARRAY_TASK_ID
if [[ -n "${LSTV_NUM_PARTS:-}" ]]; then
  [[ "$LSTV_NUM_PARTS" =~ ^[1-9][0-9]*$ ]] ||
    lstv_die "LSTV_NUM_PARTS must be a positive integer, not '$LSTV_NUM_PARTS'"
  num_parts=$LSTV_NUM_PARTS
else
  # Without LSTV_NUM_PARTS the array itself is the split, so it must be exactly 0..N-1.
  num_parts=$SLURM_ARRAY_TASK_COUNT
  if [[ "${SLURM_ARRAY_TASK_MIN:-}" != 0 || "${SLURM_ARRAY_TASK_MAX:-}" != $((num_parts - 1)) ]]; then
    lstv_die "array ${SLURM_ARRAY_TASK_MIN:-}-${SLURM_ARRAY_TASK_MAX:-} is not 0-$((num_parts - 1));" \
      "to rerun some tasks of an N-part run, set LSTV_NUM_PARTS=N"
  fi
fi
((part_id >= 0 && part_id < num_parts)) ||
  lstv_die "array task $part_id is outside 0..$((num_parts - 1)) (LSTV_NUM_PARTS=$num_parts)"

shard_dir=$(printf '%s/prod/shards/part_%03d' "$LSTV_OUTPUT_DIR" "$part_id")
lstv_banner "03 production inference: shard $part_id of $num_parts"
lstv_require_inputs
lstv_infer_args
lstv_run infer "${LSTV_INFER_ARGS[@]}" --mode prod --num_parts "$num_parts" --part_id "$part_id" \
  --output_dir "$shard_dir"
lstv_log "done: shard $part_id of $num_parts in $shard_dir"
