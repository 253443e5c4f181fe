#!/bin/bash
# Build the runtime image from docker/Dockerfile and push it to a registry.
#
#   IMAGE_NAME=lstv-uncertainty-detection IMAGE_TAG=0.1.0 REGISTRY=docker.io/myuser \
#     bash docker/build_and_push.sh
#
# IMAGE_NAME  image name              (default lstv-uncertainty-detection)
# IMAGE_TAG   tag                     (default: the version in pyproject.toml)
# REGISTRY    registry/namespace      (e.g. docker.io/myuser, ghcr.io/myorg; empty: build only)
# BASE_IMAGE  Debian base image       (default: the Dockerfile's ARG, debian:bookworm-slim)
# PUSH        1 to push, 0 to only build (default: 1 when REGISTRY is set)
# Then on the cluster: apptainer pull lstv.sif docker://$REGISTRY/$IMAGE_NAME:$IMAGE_TAG
# (or, without a registry: docker save IMAGE -o lstv-image.tar; apptainer build lstv.sif docker/lstv.def)
set -euo pipefail

project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_NAME=${IMAGE_NAME:-lstv-uncertainty-detection}
if [[ -z "${IMAGE_TAG:-}" ]]; then
  IMAGE_TAG=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$project_dir/pyproject.toml" | head -n 1)
fi
[[ -n "$IMAGE_TAG" ]] || { echo "error: set IMAGE_TAG" >&2; exit 1; }
REGISTRY=${REGISTRY:-}
if [[ -n "$REGISTRY" ]]; then
  image="${REGISTRY%/}/$IMAGE_NAME:$IMAGE_TAG"
  PUSH=${PUSH:-1}
else
  image="$IMAGE_NAME:$IMAGE_TAG"
  PUSH=${PUSH:-0}
fi
command -v docker >/dev/null 2>&1 || { echo "error: docker not found" >&2; exit 1; }

build_args=()
[[ -n "${BASE_IMAGE:-}" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
echo "building $image from $project_dir"
DOCKER_BUILDKIT=1 docker build -f "$project_dir/docker/Dockerfile" "${build_args[@]}" \
  -t "$image" "$project_dir"
docker run --rm "$image" lstv --version

if [[ "$PUSH" == 1 ]]; then
  [[ -n "$REGISTRY" ]] || { echo "error: PUSH=1 needs REGISTRY" >&2; exit 1; }
  docker push "$image"
  echo "pushed $image"
  echo "on the cluster: apptainer pull lstv.sif docker://$image"
else
  echo "built $image (not pushed; set REGISTRY to push)"
fi
