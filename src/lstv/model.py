"""hengck23's RSNA 2024 disc-level "point net": a timm ResNet encoder with a UNet decoder.

The module names, buffers and forward pass match the checkpoint ``00002484.pth`` from the Kaggle
dataset ``hengck23/rsna2024-demo-workflow`` (7th place, RSNA 2024 Lumbar Spine Degenerative
Classification), so its state dict loads strictly. Smaller encoders of the same timm ResNet
family (``resnet10t``, ``resnet18d``) give the same architecture at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.machinery
import importlib.util
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lstv.atomic import atomic_file, file_sha256, refuse_overwriting
from lstv.errors import CheckpointError, CheckpointNotFoundError, UsageError
from lstv.levels import DEFAULT_IMAGE_SIZE, NUM_CLASSES
from lstv.score_reference import CONFIG_KEY, Reference, check_checkpoint, read_reference

log = logging.getLogger(__name__)


# --- importing timm in a third of the time ---------------------------------------------------
# ``import timm`` took 2.0 s of a 3.5-4.2 s ``lstv infer`` start-up on 2 cores, 1.4 s of it for
# two things the point net never uses: torchvision's package init (its models, and through
# torchvision.ops.roi_align torch._dynamo) and torch._dynamo itself, which timm's ViT modules
# import at class creation by decorating methods with torch.compiler.disable. timm needs one
# class from torchvision at import (torchvision.ops.misc.FrozenBatchNorm2d) and its ResNet
# definitions need neither, so while timm imports:
# - torchvision and torchvision.ops are bare package objects (their __init__ not run), and
#   torchvision.models is absent (timm then goes without its optional fx feature extraction;
#   the point net calls the encoder's stages itself);
# - torch.compiler.disable defers its import of torch._dynamo to the first call of what it
#   decorates (it then applies the real one; nothing here compiles).
# Afterwards torchvision's half-imported modules are dropped, so a later ``import torchvision``
# runs in full. tests/test_model.py checks all three.
# huggingface_hub (0.4-0.7 s more: its HTTP clients) is hidden while timm imports too: timm then
# goes without its Hugging Face Hub downloads, which lstv never asks for (no pretrained
# weights; KNOWN_ENCODERS build offline). A later ``import huggingface_hub`` works as before.


@contextlib.contextmanager
def _compiler_disable_deferred():
    real = torch.compiler.disable

    def disable(fn=None, recursive=True, **kwargs):
        if fn is None:
            return lambda f: disable(f, recursive, **kwargs)
        applied = None

        @functools.wraps(fn)
        def call(*args, **kw):
            nonlocal applied
            if applied is None:
                applied = real(fn, recursive, **kwargs)
            return applied(*args, **kw)

        return call

    torch.compiler.disable = disable
    try:
        yield
    finally:
        torch.compiler.disable = real


@contextlib.contextmanager
def _torchvision_bare():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or "torchvision" in sys.modules:
        yield  # no torchvision (timm says so itself), or already imported in full
        return
    package = importlib.util.module_from_spec(spec)
    ops_spec = importlib.machinery.PathFinder.find_spec("torchvision.ops", package.__path__)
    sys.modules.update(
        {
            "torchvision": package,
            "torchvision.ops": importlib.util.module_from_spec(ops_spec),
            "torchvision.models": None,
        }
    )
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.partition(".")[0] == "torchvision"]:
            del sys.modules[name]


@contextlib.contextmanager
def _hub_hidden():
    if "huggingface_hub" in sys.modules:
        yield  # imported already: nothing to save
        return
    sys.modules["huggingface_hub"] = None  # an ImportError for timm, which goes without
    try:
        yield
    finally:
        del sys.modules["huggingface_hub"]


def _import_timm():
    if "timm" not in sys.modules:
        with _torchvision_bare(), _compiler_disable_deferred(), _hub_hidden():
            import timm
    import timm

    return timm


timm = _import_timm()

DEFAULT_ENCODER = "resnet50d"
# Encoders timm builds offline, without pretrained weights, as a stem and four stages. A
# checkpoint names its encoder, and other timm names (``hf-hub:...``) open network connections.
KNOWN_ENCODERS = (
    "resnet10t",
    "resnet14t",
    "resnet18",
    "resnet18d",
    "resnet26",
    "resnet26d",
    "resnet26t",
    "resnet34",
    "resnet34d",
    "resnet50",
    "resnet50d",
    "resnet50t",
    "resnet101",
    "resnet101d",
    "resnet152",
    "resnet152d",
    "resnet200d",
)
DECODER_DIMS = (256, 128, 64, 32, 16)
REAL_CHECKPOINT_HELP = (
    "The real localizer is hengck23's 00002484.pth from the Kaggle dataset "
    "hengck23/rsna2024-demo-workflow: run slurm_scripts/01b_download_model.sh (needs "
    "~/.kaggle/kaggle.json) to save it as models/point_net_checkpoint.pth, or pass "
    "--checkpoint models/phantom_point_net.pth to use the localizer trained on phantoms."
)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Nearest x2 upsampling, concatenation with the skip, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    def __init__(self, in_channels: int, skip_channels: list[int], out_channels: list[int]):
        super().__init__()
        ins = [in_channels, *out_channels[:-1]]
        self.block = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(ins, skip_channels, out_channels, strict=True)
        )

    def forward(self, feature: torch.Tensor, skips: list[torch.Tensor | None]) -> torch.Tensor:
        x = feature
        for block, skip in zip(self.block, skips, strict=True):
            x = block(x, skip)
        return x


class PointNet(nn.Module):
    """Disc-level localizer: uint8 (B, 1, H, W) in, (B, 6, H, W) logits out.

    Args:
        encoder: a timm ResNet-family model name (``resnet50d`` for the real checkpoint).
        pretrained: load timm's ImageNet weights for the encoder (needs the network; training only).
    """

    def __init__(self, encoder: str = DEFAULT_ENCODER, pretrained: bool = False):
        super().__init__()
        check_encoder(encoder)
        self.encoder_name = encoder
        # Integer scalars, as in the original state dict: the input is plain x / 255.
        self.register_buffer("D", torch.tensor(0))
        self.register_buffer("mean", torch.tensor(0))
        self.register_buffer("std", torch.tensor(1))
        self.encoder = timm.create_model(
            encoder, pretrained=pretrained, in_chans=3, num_classes=0, global_pool=""
        )
        stages = [info["module"] for info in self.encoder.feature_info]
        if stages != ["act1", "layer1", "layer2", "layer3", "layer4"]:
            raise ValueError(
                f"encoder {encoder!r} is not a timm ResNet with a stem and four stages "
                f"(feature stages {stages})"
            )
        widths = [info["num_chs"] for info in self.encoder.feature_info]
        self.decoder = UnetDecoder(
            in_channels=widths[-1],
            skip_channels=[*widths[:-1][::-1], 0],
            out_channels=list(DECODER_DIMS),
        )
        self.logit = nn.Conv2d(DECODER_DIMS[-1], NUM_CLASSES, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() / 255
        x = (x - self.mean) / self.std
        x = x.expand(-1, 3, -1, -1)
        e = self.encoder
        stem = e.act1(e.bn1(e.conv1(x)))
        x = F.avg_pool2d(stem, kernel_size=2, stride=2)
        features = [stem]
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4):
            x = layer(x)
            features.append(x)
        skips = [*features[:-1][::-1], None]
        return self.logit(self.decoder(features[-1], skips))


def check_encoder(name) -> str:
    """``name`` when it is one of :data:`KNOWN_ENCODERS`; a ValueError that lists them if not."""
    if not isinstance(name, str) or name not in KNOWN_ENCODERS:
        raise UsageError(
            f"unknown encoder {name!r}: only these timm encoders are built (offline, no "
            f"downloads): {', '.join(KNOWN_ENCODERS)}"
        )
    return name


@dataclass(frozen=True)
class CheckpointInfo:
    """Provenance of a loaded checkpoint, written to the run manifest."""

    path: str
    sha256: str
    config: dict = field(default_factory=dict)
    iteration: int | None = None
    epoch: int | None = None


def extract_state_dict(obj) -> dict[str, torch.Tensor]:
    """The state dict from a checkpoint in any of the layouts seen in the wild.

    Accepts ``{"state_dict": ...}``, ``{"model_state_dict": ...}`` or a bare state dict, with or
    without the ``module.`` prefix that ``DataParallel`` adds.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a dict")
    for key in ("state_dict", "model_state_dict"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            "checkpoint has no state dict: expected a dict of tensors, or one under "
            f"'state_dict' or 'model_state_dict' (top-level keys: {sorted(obj)[:10]})"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True``; a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}. {REAL_CHECKPOINT_HELP}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def checkpoint_config(obj: dict) -> dict:
    """The plain-typed ``config`` entry our own checkpoints carry; {} for the real one."""
    config = obj.get("config", {}) if isinstance(obj, dict) else {}
    return dict(config) if isinstance(config, dict) else {}


def check_checkpoint_config(config: dict, path: str | Path) -> None:
    """Refuse a checkpoint ``config`` this project cannot honour, naming the file: an encoder
    outside :data:`KNOWN_ENCODERS`, an image size that is not a plausible whole number, or risk
    bands that are not finite numbers in order."""
    try:
        check_encoder(config["encoder"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: config names an {exc}") from exc
    size = config["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 4096:
        raise CheckpointError(
            f"checkpoint {path}: config image_size {size!r} is not a whole number of pixels "
            "from 32 to 4096"
        )
    bands = config.get("risk_thresholds")
    if bands is not None:
        from lstv.uncertainty import resolve_thresholds

        try:
            if not isinstance(bands, dict) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in bands.values()
            ):
                raise UsageError(f"expected a dict of finite numbers, got {bands!r}")
            resolve_thresholds(bands)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: config risk_thresholds: {exc}") from exc


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict loading with an error that lists the missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    )
    if missing or unexpected or misshapen:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [
            f"{label}: {show(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if keys
        ]
        raise CheckpointError(
            f"checkpoint does not match PointNet(encoder={model.encoder_name!r}): "
            + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(
    path: str | Path,
    encoder: str | None = None,
    device: str | torch.device = "cpu",
    sha256: str | None = None,
) -> tuple[PointNet, CheckpointInfo]:
    """Build the point net a checkpoint describes and load its weights, in eval mode.

    Args:
        path: checkpoint file (the real ``00002484.pth`` or one saved by :func:`save_checkpoint`).
        encoder: encoder name; defaults to the checkpoint's ``config`` entry, else ``resnet50d``.
        device: where the model goes.
        sha256: the file's SHA-256 when the caller has just computed it (``lstv infer
            --reference`` checks it first): the real checkpoint is ~100 MB, so it is not hashed
            twice. Computed here when omitted.
    """
    obj = read_checkpoint(path)
    config = checkpoint_config(obj)
    config.setdefault("encoder", encoder or DEFAULT_ENCODER)
    config.setdefault("image_size", DEFAULT_IMAGE_SIZE)
    check_checkpoint_config(config, path)
    if encoder and encoder != config["encoder"]:
        raise CheckpointError(
            f"--encoder {encoder} disagrees with the encoder {config['encoder']} of {path}"
        )
    model = PointNet(encoder=config["encoder"])
    load_state_dict_strict(model, extract_state_dict(obj))
    model.eval().to(device)
    info = CheckpointInfo(
        path=str(path),
        sha256=sha256 or file_sha256(Path(path)),
        config=config,
        iteration=_plain_int(obj.get("iteration")),
        epoch=_plain_int(obj.get("epoch")),
    )
    log.info("loaded %s (%s, sha256 %s)", path, config["encoder"], info.sha256[:12])
    return model, info


def _plain_int(value) -> int | None:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return int(value) if isinstance(value, (int, float)) else None


def save_checkpoint(
    model: PointNet,
    path: str | Path,
    iteration: int = 0,
    epoch: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    extra_config: dict | None = None,
    half: bool = False,
) -> Path:
    """Save in the original layout plus a plain-typed ``config`` (loadable with weights_only).

    ``half`` stores floating tensors as float16 to halve the file; loading casts them back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"encoder": model.encoder_name, "image_size": int(image_size), **(extra_config or {})}
    payload = {
        "state_dict": {
            k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items()
        },
        "iteration": int(iteration),
        "epoch": int(epoch),
        "config": config,
    }
    with atomic_file(path, binary=True) as f:
        torch.save(payload, f)
    return path


# --------------------------------------------------------------------------- score reference


def checkpoint_reference(path: str | Path) -> Reference:
    """The score reference a checkpoint carries in its ``config`` (key ``lstv_reference``).

    Raises:
        UsageError: the checkpoint carries none, or not a valid one.
    """
    config = checkpoint_config(read_checkpoint(path))
    if CONFIG_KEY not in config:
        raise UsageError(f"checkpoint {path} carries no {CONFIG_KEY!r} in its config")
    ref = Reference.from_dict(config[CONFIG_KEY], f"{path} ({CONFIG_KEY})")
    # The embedded reference describes this very file: check runs against its SHA-256.
    return dataclasses.replace(ref, checkpoint_sha256=file_sha256(Path(path)))


def embed_reference(checkpoint: str | Path, reference: str | Path, output: str | Path) -> Path:
    """Write a copy of ``checkpoint`` that carries ``reference`` (a JSON from ``lstv
    calibrate``) in its ``config``.

    The reference must have been fitted on this very checkpoint (its SHA-256 is checked);
    tensors are saved as they were read (float16 stays float16), and ``output`` is written
    whole before it appears, so a checkpoint can be moved into place afterwards.

    Raises:
        UsageError: the reference is of another checkpoint, or ``output`` is an input.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    refuse_overwriting(output, [checkpoint, reference], "output checkpoint")
    ref = read_reference(reference)
    check_checkpoint(ref, file_sha256(checkpoint), f"reference {reference}")
    obj = read_checkpoint(checkpoint)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UsageError(f"{checkpoint} is not a checkpoint in the original layout")
    obj["config"] = {**dict(obj.get("config") or {}), CONFIG_KEY: ref.to_dict()}
    with atomic_file(output, binary=True) as f:
        torch.save(obj, f)
    log.info("%s written with the reference of %d studies from %s", output, ref.n, reference)
    return output
