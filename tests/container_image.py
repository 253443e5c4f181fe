"""The project's OCI image, built and run for tests with Debian's buildah (as root, no daemon).

The base is made locally: ``debootstrap --variant=minbase bookworm`` (what debian:bookworm-slim
is made from) imported as ``BASE_IMAGE``, kept in the container storage so later runs reuse it.
The image is docker/Dockerfile built by docker/build_buildah.sh (the command users run), with
buildah's layer cache, so a rebuild after a code change redoes only the last layers.
Commands run in the image with ``buildah run --isolation chroot`` (``podman run`` cannot set
its resource limits on these machines).

:func:`image_or_skip` turns every missing piece (root, buildah, podman, debootstrap) into a
``pytest.skip`` with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/lstv-debian-base:bookworm"
IMAGE = "localhost/lstv-uncertainty-detection:test"
DEBIAN_MIRROR = os.environ.get("LSTV_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BUILD_TIMEOUT = 3600  # a cold build installs ~3 GB of wheels; minutes on a busy 2-core machine


def missing_tools() -> str | None:
    """Why the image cannot be built here, or None."""
    if os.geteuid() != 0:
        return "building the image needs root (buildah with chroot isolation)"
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install buildah podman debootstrap)"
    return None


def image_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["buildah", "inspect", "--type", "image", name], capture_output=True
        ).returncode
        == 0
    )


def ensure_base(name: str = BASE_IMAGE) -> float:
    """Import a debootstrapped Debian bookworm as ``name`` unless it is there; seconds spent."""
    if image_exists(name):
        return 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lstv-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", name], stdin=tar.stdout, check=True,
                       capture_output=True)
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {rootfs} failed")
    return time.monotonic() - started


def build(image: str = IMAGE, base: str = BASE_IMAGE) -> float:
    """docker/Dockerfile as ``image`` on ``base``, by docker/build_buildah.sh; seconds spent."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "build_buildah.sh")],
        env={**os.environ, "IMAGE": image, "BASE_IMAGE": base},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"image build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return time.monotonic() - started


def image_size(image: str = IMAGE) -> int:
    """Bytes, as ``buildah images`` counts them (the unpacked layers)."""
    out = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    sizes = subprocess.run(
        ["buildah", "images", "--noheading", "--no-trunc", "--format", "{{.ID}} {{.Size}}"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in sizes.splitlines():
        image_id, size = line.split(" ", 1)
        if image_id.removeprefix("sha256:") == out.removeprefix("sha256:"):
            return _bytes(size)
    raise RuntimeError(f"no size for {image}")


def _bytes(size: str) -> int:
    number, unit = size.split()
    return int(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


def run(
    command: Sequence[str],
    image: str = IMAGE,
    binds: Sequence[str] = (),
    workdir: str = "/work",
    env: Sequence[str] = (),
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """``command`` in a fresh container of ``image`` (removed afterwards); binds as ``-v``."""
    container = subprocess.run(
        ["buildah", "from", "--pull-never", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        args = ["buildah", "run", "--isolation", "chroot", "--workingdir", workdir]
        for bind in binds:
            args += ["-v", bind]
        for item in env:
            args += ["-e", item]
        return subprocess.run(
            [*args, container, "--", *command], capture_output=True, text=True, timeout=timeout
        )
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def image_or_skip(pytest) -> dict[str, float]:
    """Base and image ready (built or reused); skip with the reason where they cannot be."""
    why = missing_tools()
    if why:
        pytest.skip(why)
    return {"base_s": ensure_base(), "build_s": build()}
