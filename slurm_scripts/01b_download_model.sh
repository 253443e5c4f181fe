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

dataset=${LSTV_MODEL_DATASET:-hengck23/rsna2024-demo-workflow}
checkpoint=$LSTV_CHECKPOINT
valid_ids=${LSTV_VALID_IDS:-$PROJECT_DIR/models/valid_id.npy}
min_mb=${LSTV_MIN_CHECKPOINT_MB:-100}
lstv_log "== 01b download $dataset -> $checkpoint, $valid_ids =="

# Checks one candidate pair of files; prints what it found.
verify() {
  local ckpt=$1 ids=$2 size_mb
  [[ -f "$ckpt" && -f "$ids" ]] || return 1
  size_mb=$(($(stat -c %s "$ckpt") / 1000000))
  if ((size_mb < min_mb)); then
    lstv_log "$ckpt is $size_mb MB, expected about 130 MB (at least $min_mb): incomplete?"
    return 1
  fi
  lstv_python - "$ckpt" "$ids" <<'PY'
import sys

import numpy as np

from lstv.model import PointNet, extract_state_dict, file_sha256, load_state_dict_strict
from lstv.model import read_checkpoint

ckpt, ids = sys.argv[1], sys.argv[2]
# The original layout: a state dict (under "state_dict") for the resnet50d point net.
obj = read_checkpoint(ckpt)
state_dict = extract_state_dict(obj)
load_state_dict_strict(PointNet(encoder="resnet50d"), state_dict)
valid = np.load(ids, allow_pickle=False)
if valid.ndim != 1 or valid.size == 0 or valid.dtype.kind not in "iu":
    sys.exit(f"{ids}: expected a 1-D array of integer study IDs, got {valid.dtype} {valid.shape}")
print(f"checkpoint ok: {len(state_dict)} tensors load strictly into PointNet(resnet50d), "
      f"iteration {obj.get('iteration')}, sha256 {file_sha256(ckpt)}")
print(f"valid ids ok: {valid.size} study IDs ({valid.min()}..{valid.max()})")
PY
}

if [[ "${LSTV_FORCE_DOWNLOAD:-0}" != 1 ]] && verify "$checkpoint" "$valid_ids"; then
  lstv_log "already in place and valid; set LSTV_FORCE_DOWNLOAD=1 to fetch again"
  exit 0
fi
lstv_require_kaggle
host_python=${LSTV_HOST_PYTHON:-python3}
# Downloads land next to the checkpoint (inside the project), then move into place.
staging="$(dirname "$checkpoint")/.download"
mkdir -p "$staging"

fetch() {
  local name=$1
  if [[ ! -f "$staging/$name" ]]; then
    "$LSTV_KAGGLE" datasets download -d "$dataset" -f "$name" -p "$staging" ||
      lstv_die "could not download $name from $dataset (is the dataset visible to your" \
        "Kaggle account? https://www.kaggle.com/datasets/$dataset)"
    # Kaggle sends large single files zipped.
    if [[ -f "$staging/$name.zip" ]]; then
      "$host_python" -m zipfile -e "$staging/$name.zip" "$staging"
      rm -f "$staging/$name.zip"
    fi
  fi
  [[ -f "$staging/$name" ]] || lstv_die "$name not found after the download in $staging"
}
fetch 00002484.pth
fetch valid_id.npy
if ! verify "$staging/00002484.pth" "$staging/valid_id.npy"; then
  rm -f "$staging/00002484.pth" "$staging/valid_id.npy"
  lstv_die "the downloaded files failed the check above and were removed; run this again"
fi
mkdir -p "$(dirname "$valid_ids")"
mv -f "$staging/00002484.pth" "$checkpoint"
mv -f "$staging/valid_id.npy" "$valid_ids"
rmdir "$staging" 2>/dev/null || true
lstv_log "done: $checkpoint, $valid_ids"
