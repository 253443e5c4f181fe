#!/bin/bash
# A stand-in for `apptainer exec` / `singularity exec` on machines without them (tests only):
# the call lstv slurm makes (binds, --pwd, --env, IMAGE, command) runs in a fresh container of
# the OCI image named in the file IMAGE, with buildah's chroot isolation; the container is
# removed afterwards. tests/test_slurm.py puts it on a job's PATH as `singularity`.
set -euo pipefail
[[ ${1:-} == exec ]] || { echo "buildah_exec.sh: only 'exec' is supported, not '${1:-}'" >&2; exit 2; }
shift
args=()
while [[ ${1:-} == --* ]]; do
  case $1 in
    --nv) shift ;;  # no GPU here; torch finds none and runs on the CPU
    --bind) args+=(-v "$2"); shift 2 ;;
    --pwd) args+=(--workingdir "$2"); shift 2 ;;
    --env)
      IFS=, read -ra pairs <<<"$2"
      for pair in "${pairs[@]}"; do args+=(-e "$pair"); done
      shift 2 ;;
    *) echo "buildah_exec.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
image=$(<"$1")
shift
container=$(buildah from --pull-never "$image")
trap 'buildah rm "$container" >/dev/null' EXIT
buildah run --isolation chroot "${args[@]}" "$container" -- "$@"
