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
lstv_find_project() {
  local here submitted="" dir
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [[ -n "${SLURM_JOB_ID:-}" ]] && command -v scontrol >/dev/null 2>&1; then
    submitted=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null |
      sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1) || true
  fi
  for dir in "${LSTV_PROJECT_DIR:-}" "$here/.." "${submitted:+$(dirname "$submitted")/..}" \
    "${SLURM_SUBMIT_DIR:-}"; do
    if [[ -n "$dir" && -f "$dir/slurm_scripts/common.sh" ]]; then
      (cd "$dir" && pwd)
      return 0
    fi
  done
  echo "error: cannot find the project folder; set LSTV_PROJECT_DIR=/path/to/it" >&2
  return 1
}
PROJECT_DIR=$(lstv_find_project)
# shellcheck source=slurm_scripts/common.sh
source "$PROJECT_DIR/slurm_scripts/common.sh"

LSTV_SKIP_DOWNLOAD=1 exec bash "$PROJECT_DIR/slurm_scripts/00_master_pipeline.sh" "$@"
