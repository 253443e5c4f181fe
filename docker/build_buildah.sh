#!/bin/bash
# Build docker/Dockerfile with buildah, as root, where there is no Docker daemon:
#
#   bash docker/build_buildah.sh
#   IMAGE=localhost/lstv:test BASE_IMAGE=localhost/debian:bookworm bash docker/build_buildah.sh
#
# IMAGE       image to tag     (default localhost/lstv-uncertainty-detection:VERSION)
# BASE_IMAGE  Debian base      (default: the Dockerfile's ARG, debian:bookworm-slim)
#
# pip in the build installs what the host's pip would: the host's pip settings (its config
# files and PIP_* variables, as `pip config list` merges them) go in as the build's
# /etc/pip.conf, and every local file they name (wheel folders, file:// indexes, constraints)
# is bind-mounted read-only at the same path, only where it exists. The CA bundle pip trusts
# (with none configured, Debian's /etc/ssl/certs/ca-certificates.crt when the host has one)
# goes in as /etc/pip-host-ca.crt: behind a TLS-inspecting proxy pip fails with
# CERTIFICATE_VERIFY_FAILED without it, and the image's own ca-certificates package must stay
# free to write its bundle. Nothing of this stays in the image. Then:
#   buildah push IMAGE docker-archive:lstv.tar && apptainer build lstv.sif docker/lstv.def
set -euo pipefail

project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$project_dir/pyproject.toml" | head -n 1)
IMAGE=${IMAGE:-localhost/lstv-uncertainty-detection:$version}
command -v buildah >/dev/null 2>&1 || { echo "error: buildah not found (apt-get install buildah)" >&2; exit 1; }

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
mounts=()
if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
  # One config file from pip's merged view (a PIP_* variable wins over the files, as in pip),
  # and the local paths it names.
  python3 -m pip config list 2>/dev/null | python3 -c '
import ast, os, re, sys
settings = {}
for line in sys.stdin:
    m = re.match(r"^(:env:|[^.]+)\.([\w-]+)=(.*)$", line.strip())
    if m and (m.group(1) == ":env:" or m.group(2) not in settings or settings[m.group(2)][0] != ":env:"):
        settings[m.group(2)] = (m.group(1), ast.literal_eval(m.group(3)))  # pip prints repr()s
values = {key: value for key, (_, value) in settings.items()}
ca = values.pop("cert", "/etc/ssl/certs/ca-certificates.crt")
if os.path.isfile(ca):
    values["cert"] = "/etc/pip-host-ca.crt"
    print(f"-v\n{ca}:/etc/pip-host-ca.crt:ro")
with open(sys.argv[1], "w") as conf:
    conf.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(values.items())))
paths = {re.sub(r"^file://", "", word) for v in values.values() for word in str(v).split()}
# A local index links its files relative to itself (/opt/pypi/simple/x/ -> ../../files/).
paths |= {os.path.dirname(p.rstrip("/")) for p in paths if p.rstrip("/").endswith("/simple")}
for path in sorted(paths):
    if path.startswith("/") and os.path.exists(path):
        print(f"-v\n{path}:{path}:ro")
' "$workdir/pip.conf" >"$workdir/mounts"
  mounts+=(-v "$workdir/pip.conf:/etc/pip.conf:ro")
  mapfile -t -O "${#mounts[@]}" mounts <"$workdir/mounts"
fi

build_args=()
[[ -n "${BASE_IMAGE:-}" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
echo "building $IMAGE from $project_dir with ${#mounts[@]} pip settings arguments" >&2
buildah bud --isolation chroot --layers -f "$project_dir/docker/Dockerfile" \
  --ignorefile "$project_dir/docker/Dockerfile.dockerignore" \
  "${build_args[@]}" "${mounts[@]}" -t "$IMAGE" "$project_dir"

# The bind mounts left empty files and folders where they were (buildah keeps mount points):
# take those out, so the image holds nothing of the host's settings.
targets=()
for ((i = 1; i < ${#mounts[@]}; i += 2)); do
  target=${mounts[i]#*:}
  targets+=("${target%:ro}")
done
if ((${#targets[@]})); then
  container=$(buildah from --pull-never "$IMAGE")
  # shellcheck disable=SC2016  # $p expands in the container's sh
  buildah run --isolation chroot "$container" -- sh -c '
    for p; do
      if [ -f "$p" ] && [ ! -s "$p" ]; then rm -f "$p"; fi
      if [ -d "$p" ]; then rmdir -p --ignore-fail-on-non-empty "$p" 2>/dev/null || true; fi
    done' sh "${targets[@]}"  # rmdir -p: a folder goes once its stub children have gone
  buildah commit --rm "$container" "$IMAGE" >/dev/null
fi
echo "built $IMAGE" >&2
