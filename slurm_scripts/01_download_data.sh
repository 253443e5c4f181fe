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

competition=${LSTV_COMPETITION:-rsna-2024-lumbar-spine-degenerative-classification}
dest=$LSTV_DATA_DIR
marker="$dest/.download_complete"
lstv_log "== 01 download $competition into $dest =="
if [[ -f "$marker" && "${LSTV_FORCE_DOWNLOAD:-0}" != 1 ]]; then
  lstv_log "already complete ($marker); set LSTV_FORCE_DOWNLOAD=1 to check and fetch again"
  exit 0
fi
lstv_require_kaggle
host_python=${LSTV_HOST_PYTHON:-python3}
mkdir -p "$dest"
zip="$dest/$competition.zip"

# 1. The zip. Without --force the CLI skips an up-to-date file and resumes a partial one.
if ! "$LSTV_KAGGLE" competitions download -c "$competition" -p "$dest"; then
  lstv_die "the Kaggle download failed. A 403 means the competition rules are not accepted" \
    "yet: https://www.kaggle.com/competitions/$competition/rules (then run this again;" \
    "it continues where it stopped)"
fi
[[ -f "$zip" ]] || lstv_die "the Kaggle CLI finished but $zip is not there"

# 2. Unpack, skipping members already extracted with the right size; each file is written
# under a temporary name first, so an interrupted run never leaves a truncated file behind.
lstv_log "extracting $zip (files already there are kept)"
"$host_python" - "$zip" "$dest" <<'PY'
import os
import sys
import zipfile

archive, dest = sys.argv[1], os.path.realpath(sys.argv[2])
done = skipped = 0
with zipfile.ZipFile(archive) as zf:
    for info in zf.infolist():
        target = os.path.realpath(os.path.join(dest, info.filename))
        if not target.startswith(dest + os.sep):
            sys.exit(f"refusing to extract {info.filename!r} outside {dest}")
        if info.is_dir():
            os.makedirs(target, exist_ok=True)
            continue
        if os.path.isfile(target) and os.path.getsize(target) == info.file_size:
            skipped += 1
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".part"
        with zf.open(info) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
        done += 1
print(f"extracted {done} files, {skipped} already there")
PY

# 3. Check: both tables, and a folder of images for every study the series table lists.
"$host_python" - "$dest" <<'PY'
import csv
import os
import sys

root = sys.argv[1]
for name in ("train_series_descriptions.csv", "train_label_coordinates.csv"):
    if not os.path.isfile(os.path.join(root, name)):
        sys.exit(f"{name} missing in {root}")
with open(os.path.join(root, "train_series_descriptions.csv"), newline="") as f:
    series = [(r["study_id"], r["series_id"]) for r in csv.DictReader(f)]
missing = [
    f"{s}/{e}"
    for s, e in series
    if not os.path.isdir(os.path.join(root, "train_images", s, e))
    or not os.listdir(os.path.join(root, "train_images", s, e))
]
if missing:
    sys.exit(f"{len(missing)} of {len(series)} series have no images, e.g. {missing[:3]}")
print(f"{len({s for s, _ in series})} studies, {len(series)} series: complete")
PY

date -u '+%Y-%m-%dT%H:%M:%SZ' >"$marker"
if [[ "${LSTV_KEEP_ZIP:-0}" != 1 ]]; then
  rm -f "$zip"
  lstv_log "removed $zip (set LSTV_KEEP_ZIP=1 to keep it)"
fi
lstv_log "done: $dest"
