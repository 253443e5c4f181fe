# shellcheck shell=bash
# Shared settings and helpers of the sbatch scripts. Sourced (never run) after the script has
# set PROJECT_DIR. Every setting is an environment variable with a default; the list, with what
# each one means, is in slurm_scripts/README.md.

if [[ -z "${PROJECT_DIR:-}" || ! -d "$PROJECT_DIR" ]]; then
  echo "common.sh: set PROJECT_DIR before sourcing" >&2
  return 1
fi
export LSTV_PROJECT_DIR="$PROJECT_DIR"
# Make `set -e` hold inside $(...) as well (job IDs are read that way).
shopt -s inherit_errexit

# -------------------------------------------------------------------------- logging
lstv_log() {
  printf '[%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >&2
}

lstv_die() {
  lstv_log "ERROR: $*"
  exit 1
}

# Relative paths in the settings are relative to the project, wherever the job starts.
lstv_abspath() {
  case "$1" in
    "") echo "" ;;
    /*) echo "$1" ;;
    *) echo "$PROJECT_DIR/$1" ;;
  esac
}

# -------------------------------------------------------------------------- settings
LSTV_DATA_DIR=$(lstv_abspath "${LSTV_DATA_DIR:-data/raw}")
LSTV_INPUT_DIR=$(lstv_abspath "${LSTV_INPUT_DIR:-$LSTV_DATA_DIR/train_images}")
LSTV_SERIES_CSV=$(lstv_abspath "${LSTV_SERIES_CSV:-$LSTV_DATA_DIR/train_series_descriptions.csv}")
LSTV_OUTPUT_DIR=$(lstv_abspath "${LSTV_OUTPUT_DIR:-data/output}")
LSTV_CHECKPOINT=$(lstv_abspath "${LSTV_CHECKPOINT:-models/point_net_checkpoint.pth}")
# Empty means "no hold-out filter": every study runs.
LSTV_VALID_IDS=$(lstv_abspath "${LSTV_VALID_IDS-models/valid_id.npy}")
LSTV_LOG_DIR=$(lstv_abspath "${LSTV_LOG_DIR:-logs}")
: "${LSTV_DEVICE:=auto}"
: "${LSTV_BATCH_SIZE:=16}"
: "${LSTV_NUM_WORKERS:=${SLURM_CPUS_PER_TASK:-2}}"
: "${LSTV_N_TRIAL:=10}"
: "${LSTV_SEED:=42}"
: "${LSTV_SAVE_HEATMAPS:=1}"
: "${LSTV_EXTRA_ARGS:=}"
: "${LSTV_PYTHON:=python3}"
: "${LSTV_USE_CONTAINER:=auto}"
# Remember whether the image path was chosen by the user: a missing chosen image is an error,
# a missing default one just means "run on the host".
if [[ -n "${LSTV_CONTAINER:-}" ]]; then
  _lstv_container_chosen=1
else
  _lstv_container_chosen=0
fi
LSTV_CONTAINER=$(lstv_abspath "${LSTV_CONTAINER:-lstv.sif}")
# Nothing above is exported: jobs submitted from here get the user's own settings (sbatch
# --export=ALL) and work out the defaults on their node (LSTV_NUM_WORKERS from the job's CPUs).

# -------------------------------------------------------------------------- where lstv runs
# Sets LSTV_RUNTIME to apptainer, singularity or host, and LSTV_RUNTIME_WHY to the reason.
lstv_choose_runtime() {
  local tool=""
  if command -v apptainer >/dev/null 2>&1; then
    tool=apptainer
  elif command -v singularity >/dev/null 2>&1; then
    tool=singularity
  fi
  case "$LSTV_USE_CONTAINER" in
    0 | no | false)
      LSTV_RUNTIME=host
      LSTV_RUNTIME_WHY="LSTV_USE_CONTAINER=$LSTV_USE_CONTAINER"
      ;;
    1 | yes | true | auto)
      if [[ -f "$LSTV_CONTAINER" && -n "$tool" ]]; then
        LSTV_RUNTIME=$tool
        LSTV_RUNTIME_WHY="image $LSTV_CONTAINER"
      elif [[ "$LSTV_USE_CONTAINER" != auto || "$_lstv_container_chosen" == 1 ]]; then
        [[ -f "$LSTV_CONTAINER" ]] || lstv_die "container image not found: $LSTV_CONTAINER" \
          "(build it as in slurm_scripts/README.md, or unset LSTV_CONTAINER to run on the host)"
        lstv_die "container image $LSTV_CONTAINER is there but neither apptainer nor" \
          "singularity is on PATH (try: module load apptainer)"
      else
        LSTV_RUNTIME=host
        if [[ -f "$LSTV_CONTAINER" ]]; then
          LSTV_RUNTIME_WHY="no apptainer or singularity on PATH"
        else
          LSTV_RUNTIME_WHY="no container image at $LSTV_CONTAINER"
        fi
      fi
      ;;
    *) lstv_die "LSTV_USE_CONTAINER must be auto, 1 or 0, not '$LSTV_USE_CONTAINER'" ;;
  esac
}

# Inside the container the project is mounted at /work.
lstv_container_path() {
  case "$1" in
    "$PROJECT_DIR") echo /work ;;
    "$PROJECT_DIR"/*) echo "/work/${1#"$PROJECT_DIR"/}" ;;
    *) echo "$1" ;;
  esac
}

# Read-only binds for inputs kept outside the project (e.g. data on a scratch file system).
_lstv_input_binds() {
  local path dir seen=" "
  for path in "$LSTV_INPUT_DIR" "$LSTV_SERIES_CSV" "$LSTV_CHECKPOINT" "$LSTV_VALID_IDS"; do
    [[ -n "$path" ]] || continue
    case "$path" in "$PROJECT_DIR" | "$PROJECT_DIR"/*) continue ;; esac
    if [[ -d "$path" ]]; then dir=$path; else dir=$(dirname "$path"); fi
    [[ -d "$dir" ]] || continue
    [[ "$seen" == *" $dir "* ]] && continue
    seen+="$dir "
    printf '%s\n' "--bind" "$dir:$dir:ro"
  done
}

# Run `python ARGS...` in the container when there is one, on the host Python otherwise.
# Arguments that are paths inside the project are rewritten to the container's /work.
lstv_python() {
  [[ -n "${LSTV_RUNTIME:-}" ]] || lstv_choose_runtime
  if [[ "$LSTV_RUNTIME" == host ]]; then
    "$LSTV_PYTHON" -c 'import lstv' 2>/dev/null ||
      lstv_die "'$LSTV_PYTHON' cannot import lstv: run 'pip install -e $PROJECT_DIR'," \
        "set LSTV_PYTHON to the Python that has it, or use the container (LSTV_CONTAINER)"
    lstv_log "on the host ($LSTV_RUNTIME_WHY): $(command -v "$LSTV_PYTHON") $*"
    (cd "$PROJECT_DIR" && "$LSTV_PYTHON" "$@")
    return
  fi
  # The image is read-only and only the project is mounted writable: outputs must be in it.
  case "$LSTV_OUTPUT_DIR" in
    "$PROJECT_DIR" | "$PROJECT_DIR"/*) ;;
    *) lstv_die "LSTV_OUTPUT_DIR=$LSTV_OUTPUT_DIR is outside $PROJECT_DIR, the only folder" \
      "the container may write to; choose a folder inside the project" ;;
  esac
  local args=() arg binds=()
  for arg in "$@"; do
    args+=("$(lstv_container_path "$arg")")
  done
  mapfile -t binds < <(_lstv_input_binds)
  lstv_log "in the container ($LSTV_RUNTIME, $LSTV_RUNTIME_WHY): python ${args[*]}"
  # Caches (matplotlib, torch hub) go to the project too (created on first use), never to
  # $HOME or the image.
  "$LSTV_RUNTIME" exec --nv \
    --bind "$PROJECT_DIR":/work \
    "${binds[@]}" \
    --pwd /work \
    --env MPLCONFIGDIR=/work/.cache/matplotlib,XDG_CACHE_HOME=/work/.cache,TORCH_HOME=/work/.cache/torch \
    "$LSTV_CONTAINER" python "${args[@]}"
}

# Run `lstv ARGS...` (container or host, as lstv_python).
lstv_run() {
  lstv_python -m lstv "$@"
}

# -------------------------------------------------------------------------- Kaggle
# The Kaggle CLI reads its token from $KAGGLE_CONFIG_DIR/kaggle.json or ~/.kaggle/kaggle.json.
# Only the file's presence and mode are checked: it is never read, copied or printed here.
lstv_require_kaggle() {
  local file="${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}/kaggle.json" mode
  if [[ ! -f "$file" ]]; then
    lstv_die "no Kaggle API token at $file, so nothing can be downloaded. To fix:" \
      "(1) on https://www.kaggle.com open Settings > API > Create New Token;" \
      "(2) save the downloaded kaggle.json as ~/.kaggle/kaggle.json and run" \
      "'chmod 600 ~/.kaggle/kaggle.json' (keep it out of the project folder);" \
      "(3) accept the competition rules at" \
      "https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification/rules;" \
      "(4) run this script again."
  fi
  mode=$(stat -c '%a' "$file" 2>/dev/null || echo 600)
  if [[ "${mode: -2}" != 00 ]]; then
    lstv_log "WARNING: $file is readable by other users; run 'chmod 600 $file'"
  fi
  LSTV_KAGGLE=${LSTV_KAGGLE:-kaggle}
  command -v "$LSTV_KAGGLE" >/dev/null 2>&1 ||
    lstv_die "the Kaggle CLI '$LSTV_KAGGLE' is not on PATH: 'pip install kaggle'" \
      "(or set LSTV_KAGGLE to its path)"
}

# -------------------------------------------------------------------------- infer arguments
# Fills the array LSTV_INFER_ARGS with the flags every `lstv infer` call shares. An empty
# LSTV_VALID_IDS turns the hold-out filter off: /dev/null is "no such file" to lstv.
lstv_infer_args() {
  LSTV_INFER_ARGS=(
    --input_dir "$LSTV_INPUT_DIR"
    --series_csv "$LSTV_SERIES_CSV"
    --checkpoint "$LSTV_CHECKPOINT"
    --valid_ids "${LSTV_VALID_IDS:-/dev/null}"
    --device "$LSTV_DEVICE"
    --batch_size "$LSTV_BATCH_SIZE"
    --num_workers "$LSTV_NUM_WORKERS"
    --seed "$LSTV_SEED"
  )
  if [[ "$LSTV_SAVE_HEATMAPS" == 1 ]]; then
    LSTV_INFER_ARGS+=(--save_heatmaps)
  fi
  if [[ -n "$LSTV_EXTRA_ARGS" ]]; then
    local extra
    read -r -a extra <<<"$LSTV_EXTRA_ARGS"
    LSTV_INFER_ARGS+=("${extra[@]}")
  fi
}

# Fail early, with the step that makes the file, instead of deep inside Python.
lstv_require_inputs() {
  [[ -f "$LSTV_CHECKPOINT" ]] || lstv_die "checkpoint not found: $LSTV_CHECKPOINT" \
    "(run slurm_scripts/01b_download_model.sh, or set LSTV_CHECKPOINT)"
  [[ -f "$LSTV_SERIES_CSV" ]] || lstv_die "series table not found: $LSTV_SERIES_CSV" \
    "(run slurm_scripts/01_download_data.sh, or set LSTV_DATA_DIR)"
  [[ -d "$LSTV_INPUT_DIR" ]] || lstv_die "image folder not found: $LSTV_INPUT_DIR" \
    "(run slurm_scripts/01_download_data.sh, or set LSTV_DATA_DIR / LSTV_INPUT_DIR)"
  if [[ -n "$LSTV_VALID_IDS" && ! -f "$LSTV_VALID_IDS" ]]; then
    lstv_log "WARNING: $LSTV_VALID_IDS not found: every study runs, with no hold-out filter" \
      "(run 01b_download_model.sh, or set LSTV_VALID_IDS= to silence this)"
  fi
}

# -------------------------------------------------------------------------- job banner
lstv_banner() {
  lstv_choose_runtime
  lstv_log "== $1 =="
  lstv_log "job ${SLURM_JOB_ID:-none} (array ${SLURM_ARRAY_JOB_ID:-none}," \
    "task ${SLURM_ARRAY_TASK_ID:-none}) on $(hostname), project $PROJECT_DIR"
  lstv_log "GPUs: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset};" \
    "runs on: $LSTV_RUNTIME ($LSTV_RUNTIME_WHY)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L >&2 || true
  fi
}

# -------------------------------------------------------------------------- submitting
# Resource flags for jobs that need a GPU (kind=gpu) or not (kind=cpu), from the LSTV_*
# resource settings; an unset setting keeps the script's own #SBATCH default.
lstv_resource_args() {
  local kind=$1 extra
  LSTV_RESOURCE_ARGS=()
  if [[ "$kind" == gpu ]]; then
    [[ -n "${LSTV_PARTITION:-}" ]] && LSTV_RESOURCE_ARGS+=(--partition "$LSTV_PARTITION")
    [[ -n "${LSTV_GRES:-}" ]] && LSTV_RESOURCE_ARGS+=(--gres "$LSTV_GRES")
    [[ -n "${LSTV_TIME:-}" ]] && LSTV_RESOURCE_ARGS+=(--time "$LSTV_TIME")
  else
    [[ -n "${LSTV_CPU_PARTITION:-}" ]] && LSTV_RESOURCE_ARGS+=(--partition "$LSTV_CPU_PARTITION")
  fi
  [[ -n "${LSTV_CPUS:-}" ]] && LSTV_RESOURCE_ARGS+=(--cpus-per-task "$LSTV_CPUS")
  [[ -n "${LSTV_MEM:-}" ]] && LSTV_RESOURCE_ARGS+=(--mem "$LSTV_MEM")
  [[ -n "${LSTV_ACCOUNT:-}" ]] && LSTV_RESOURCE_ARGS+=(--account "$LSTV_ACCOUNT")
  [[ -n "${LSTV_QOS:-}" ]] && LSTV_RESOURCE_ARGS+=(--qos "$LSTV_QOS")
  if [[ -n "${LSTV_SBATCH_ARGS:-}" ]]; then
    read -r -a extra <<<"$LSTV_SBATCH_ARGS"
    LSTV_RESOURCE_ARGS+=("${extra[@]}")
  fi
  return 0
}

# lstv_submit KIND SCRIPT [SBATCH OPTIONS...] [-- SCRIPT ARGS...]: submit one of the numbered
# scripts and print its job ID. Logs go to LSTV_LOG_DIR and the job starts in the project, so
# this works from any directory.
lstv_submit() {
  local kind=$1 script=$2 opts=() script_args=()
  shift 2
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == -- ]]; then
      shift
      script_args=("$@")
      break
    fi
    opts+=("$1")
    shift
  done
  command -v sbatch >/dev/null 2>&1 || lstv_die "sbatch not found: run this on a SLURM login node"
  mkdir -p "$LSTV_LOG_DIR"
  lstv_resource_args "$kind"
  sbatch --parsable \
    --chdir "$PROJECT_DIR" \
    --output "$LSTV_LOG_DIR/%x_%A_%a.out" \
    --error "$LSTV_LOG_DIR/%x_%A_%a.err" \
    --export ALL \
    "${LSTV_RESOURCE_ARGS[@]}" \
    "${opts[@]}" \
    "$PROJECT_DIR/slurm_scripts/$script" "${script_args[@]}" | cut -d';' -f1
}

# Submit the production array and the merge job that waits for it; print both job IDs as
# "ARRAY_ID MERGE_ID". Optional first argument: a dependency for the array (afterok:ID...).
lstv_submit_prod() {
  local dependency=${1:-} num_parts indices array_id merge_id dep_opts=()
  num_parts=${LSTV_NUM_PARTS:-8}
  [[ "$num_parts" =~ ^[1-9][0-9]*$ ]] || lstv_die "LSTV_NUM_PARTS must be a positive integer"
  indices=${LSTV_ARRAY_INDICES:-0-$((num_parts - 1))}
  [[ -n "$dependency" ]] && dep_opts=(--dependency "$dependency")
  # LSTV_NUM_PARTS travels with the job (--export ALL): a task rerun alone (--array=1) still
  # knows the run was split into num_parts shards.
  array_id=$(LSTV_NUM_PARTS=$num_parts lstv_submit gpu 03_prod_inference.sh \
    --array "$indices" "${dep_opts[@]}")
  merge_id=$(LSTV_NUM_PARTS=$num_parts lstv_submit cpu 03b_merge_report.sh \
    --dependency "afterok:$array_id")
  echo "$array_id $merge_id"
}
