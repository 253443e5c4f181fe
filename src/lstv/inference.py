"""From a sorted series to the localizer's probability maps: model input, views, forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lstv.errors import UsageError
from lstv.levels import DEFAULT_IMAGE_SIZE

if TYPE_CHECKING:  # torch loads when a model does: reader processes never import it
    import torch

# Test-time views: small in-plane shifts (pixels of the model input). Flips are left out on
# purpose: a flipped sagittal puts the spine on the wrong side, which the net never saw.
TTA_SHIFTS = ((0, 0), (-6, 0), (6, 0), (0, -6), (0, 6))


# OpenCV resizes each channel on its own, but its uint8 INTER_LINEAR result depends on how many
# channels the call has: an exact 2x reduction of a 1-, 3- or 4-channel image takes another path
# than one of 2 or >= 5 channels, and differs by a grey level on ~3% of the pixels. The original
# resizes the whole (H, W, D) volume in one call; a window of this many slices around the centre
# takes the same path as any D >= 5 (bit-identical on every size tests/test_inference.py tries),
# at a fraction of the cost, and stays under OpenCV's channel limit whatever D is.
RESIZE_WINDOW = 5


def model_input(volume: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """The localizer's (S, S) uint8 input: slice ``D // 2`` of the (D, H, W) uint8 volume, resized
    to ``image_size`` square exactly as the original demo does it (see :data:`RESIZE_WINDOW`).

    Raises:
        ValueError: ``volume`` is not a non-empty (D, H, W) array.
    """
    return model_inputs(volume, image_size)[0]


def centre_input(centre: np.ndarray, n_slices: int, image_size: int = DEFAULT_IMAGE_SIZE):
    """:func:`model_input` of a series of ``n_slices`` from its 8-bit centre slice ``D // 2``
    alone, the same bytes. OpenCV resizes each channel on its own: a channel's result depends
    on how many channels the call has (:data:`RESIZE_WINDOW`), never on the others' pixels, so
    the centre stands in for its neighbours, which then need no windowing (4 of a reader's 5
    table lookups per study when the model reads the centre alone).

    Raises:
        ValueError: ``centre`` is not a non-empty (H, W) array, or ``n_slices`` < 1.
    """
    if centre.ndim != 2 or 0 in centre.shape or n_slices < 1:
        raise ValueError(
            f"centre_input needs the (H, W) centre slice of a series of >= 1 slices, got shape "
            f"{centre.shape} of {n_slices}"
        )
    part = input_slices(n_slices)
    channels = part.stop - part.start
    return resize_volume(np.broadcast_to(centre, (channels, *centre.shape)), image_size)[0]


def parasagittal_offsets(n_slices: int, k: int) -> tuple[int, ...]:
    """Offsets from the centre slice ``D // 2`` of the parasagittal slices the model also reads:
    -1, +1, -2, +2, ... up to +-``k``, those that lie inside a series of ``n_slices``."""
    centre = n_slices // 2
    return tuple(o for d in range(1, k + 1) for o in (-d, d) if 0 <= centre + o < n_slices)


def model_inputs(
    volume: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE, offsets=(0,)
) -> np.ndarray:
    """(len(offsets), S, S) uint8 inputs: slice ``D // 2 + offset`` for each offset, each resized
    as :func:`model_input` resizes the centre (one call on a window of at least
    :data:`RESIZE_WINDOW` slices around the centre, so slice ``D // 2`` is the original's bit for
    bit whatever the offsets).

    Raises:
        ValueError: ``volume`` is not a non-empty (D, H, W) array, or an offset lies outside it.
    """
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(
            f"model_input needs the (D, H, W) volume (the original resizes all slices in one "
            f"call), got shape {volume.shape}"
        )
    centre = volume.shape[0] // 2
    outside = [o for o in offsets if not 0 <= centre + o < volume.shape[0]]
    if outside:
        raise ValueError(f"slice offsets {outside} lie outside a volume of {volume.shape[0]}")
    reach = max((abs(o) for o in offsets), default=0)
    volume = volume[input_slices(volume.shape[0], reach)]  # the centre stays at D // 2
    resized = resize_volume(volume, image_size)
    return resized[[volume.shape[0] // 2 + o for o in offsets]]


def input_slices(n_slices: int, parasagittal: int = 0) -> slice:
    """The slices of a volume of ``n_slices`` that :func:`model_input` reads: the
    :data:`RESIZE_WINDOW` around the centre ``D // 2``, or +-``parasagittal`` when that is wider
    (:func:`model_inputs`), all of them when there are no more; the centre of the part is the
    volume's centre."""
    half = max(RESIZE_WINDOW // 2, parasagittal)
    if n_slices <= 2 * half + 1:
        return slice(0, n_slices)
    centre = n_slices // 2
    return slice(centre - half, centre + half + 1)


def resize_volume(volume: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """The original's resize: the (D, H, W) volume as one (H, W, D) image through
    ``cv2.resize(..., INTER_LINEAR)``, back to (D, S, S)."""
    # cv2.merge interleaves the slices into (H, W, D): the same bytes as numpy's transposed
    # copy, at a third of its cost (0.26 vs 0.86 ms for a study's 5 slices).
    stacked = cv2.merge([np.ascontiguousarray(plane) for plane in volume])
    resized = cv2.resize(stacked, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.reshape(image_size, image_size, -1).transpose(2, 0, 1))


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by (dx, dy) pixels, filling the uncovered border with the edge values."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[-2:]
    return cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
    )


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass
class Predictor:
    """Batched softmax maps from uint8 images; AMP (fp16) on CUDA only, fp32 on the CPU."""

    model: torch.nn.Module
    device: torch.device

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 -> (B, 6, S, S) float32 probabilities."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(images)[:, None]).to(self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                logits = self.model(batch)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_views(
        self, image: np.ndarray, shifts=TTA_SHIFTS, unshifted: np.ndarray | None = None
    ) -> np.ndarray:
        """(V, 6, S, S) maps of shifted copies of one image, shifted back into its frame.

        Args:
            image: (S, S) uint8 model input.
            shifts: (dx, dy) pixel shifts, one per view.
            unshifted: the (6, S, S) maps of ``image`` itself when the caller already has them
                (the batch forward): the (0, 0) view reuses them instead of running the net again.
        """
        run = [s for s in shifts if unshifted is None or tuple(s) != (0, 0)]
        probs = iter(self(np.stack([shift_image(image, dx, dy) for dx, dy in run])) if run else [])
        views = []
        for dx, dy in shifts:
            if unshifted is not None and (dx, dy) == (0, 0):
                views.append(np.asarray(unshifted, dtype=np.float32))
            else:
                views.append(np.stack([shift_image(p, -dx, -dy) for p in next(probs)]))
        return np.stack(views)


def load_predictor(checkpoint, device: str = "auto", sha256: str | None = None):
    """The checkpoint's model wrapped in a :class:`Predictor`, and its provenance
    (``sha256``: the file's digest when the caller already has it, see
    :func:`lstv.model.load_checkpoint`).

    Raises:
        lstv.errors.CheckpointNotFoundError: the file is missing (the message says how to get
            the real one).
        lstv.errors.CheckpointError: the file is not a point-net checkpoint.
    """
    import torch

    from lstv.model import load_checkpoint

    torch.manual_seed(0)
    dev = resolve_device(device)
    model, info = load_checkpoint(checkpoint, device=dev, sha256=sha256)
    return Predictor(model, dev), info
