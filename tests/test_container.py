"""The project's image, built from docker/Dockerfile and run (tests/container_image.py).

A local Debian base by debootstrap, the Dockerfile by buildah with the host's pip settings
(docker/build_buildah.sh), then inside the image: the version, the compressed-DICOM decoders,
one torch, and ``lstv demo`` whose metrics equal the host's run of the same phantoms with the
same checkpoint. Skips, saying why, without root, buildah, podman or debootstrap. A cold build
takes minutes (README, "Container image"); a rebuild after a code change reuses the layers.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import container_image

pytestmark = [pytest.mark.container, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "models/phantom_point_net.pth"
TOLERANCE = 1e-6
DEMO = ["demo", "--n_studies", "8", "--seed", "5", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def image():
    timings = container_image.image_or_skip(pytest)
    size = container_image.image_size()
    print(f"image {container_image.IMAGE}: {size / 1e9:.2f} GB; {timings}")
    return container_image.IMAGE


def in_image(*command: str, **kwargs) -> subprocess.CompletedProcess:
    result = container_image.run(list(command), **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_image_runs_the_project_version(image):
    host = subprocess.run(
        [sys.executable, "-m", "lstv", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert in_image("lstv", "--version").stdout.strip() == host
    assert re.fullmatch(r"lstv \d+\.\d+\.\d+", host)


def test_image_decoders_and_one_torch(image):
    in_image("python", "-c", "import gdcm, pylibjpeg")
    pin = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
    # Every torch on the image's disk, not only the one Python imports.
    found = in_image(
        "sh", "-c", "find / -xdev -type d -name 'torch-*.dist-info' | sort"
    ).stdout.split()
    assert [Path(p).name for p in found] == [f"torch-{pin}.dist-info"], found
    version = in_image("python", "-c", "import torch; print(torch.__version__)").stdout.strip()
    assert version.split("+")[0] == pin


def test_build_leaves_no_host_settings_in_the_image(image):
    """The pip config, CA bundle and mirrors were bind mounts: none of them is in the image."""
    left = in_image(
        "sh", "-c",
        "for p in /etc/pip.conf /etc/pip-host-ca.crt /opt/wheels /opt/pypi /opt/pypi-more; "
        "do [ -e $p ] && echo $p; done; true",
    ).stdout.split()
    assert left == []


def test_demo_in_the_image_equals_the_host_run(image, tmp_path):
    host_out, image_out = tmp_path / "host", tmp_path / "image"
    image_out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "lstv", *DEMO, "--checkpoint", CHECKPOINT,
         "--output_dir", str(host_out)],
        check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900,
    )
    # The project read-only at /work (the checkpoint), the output folder writable, as
    # lstv slurm binds them.
    in_image(
        "lstv", *DEMO, "--checkpoint", f"/work/{CHECKPOINT}", "--output_dir", "/out",
        binds=[f"{REPO}:/work:ro", f"{image_out}:/out"],
        env=["OMP_NUM_THREADS=1"],
        timeout=900,
    )
    name = "lstv_uncertainty_metrics.csv"
    assert same_metrics(image_out / name, host_out / name) > 100


def same_metrics(a: Path, b: Path) -> int:
    """Same columns and studies, every number within TOLERANCE, every text equal; the count of
    numbers compared."""
    with open(a, newline="") as fa, open(b, newline="") as fb:
        ra, rb = csv.DictReader(fa), csv.DictReader(fb)
        rows_a, rows_b = list(ra), list(rb)
        assert ra.fieldnames == rb.fieldnames
    assert [r["study_id"] for r in rows_a] == [r["study_id"] for r in rows_b]
    compared = 0
    for x, y in zip(rows_a, rows_b, strict=True):
        for col, value in x.items():
            try:
                u, v = float(value), float(y[col])
            except ValueError:
                assert value == y[col], (x["study_id"], col, value, y[col])
                continue
            assert abs(u - v) <= TOLERANCE or (u != u and v != v), (x["study_id"], col, u, v)
            compared += 1
    return compared
