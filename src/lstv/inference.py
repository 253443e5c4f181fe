"""From a sorted series to the localizer's probability maps: model input, views, forward."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from lstv.levels import DEFAULT_IMAGE_SIZE

# Test-time views: small in-plane shifts (pixels of the model input). Flips are left out on
# purpose: a flipped sagittal puts the spine on the wrong side, which the net never saw.
TTA_SHIFTS = ((0, 0), (-6, 0), (6, 0), (0, -6), (0, 6))


def model_input(slice_pixels: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """One uint8 slice resized to ``image_size`` square with ``cv2.INTER_LINEAR``."""
    return cv2.resize(slice_pixels, (image_size, image_size), interpolation=cv2.INTER_LINEAR)


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by (dx, dy) pixels, filling the uncovered border with the edge values."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[-2:]
    return cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
    )


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass
class Predictor:
    """Batched softmax maps from uint8 images; AMP (fp16) on CUDA only, fp32 on the CPU."""

    model: torch.nn.Module
    device: torch.device

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 -> (B, 6, S, S) float32 probabilities."""
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


def load_predictor(checkpoint, device: str = "auto"):
    """The checkpoint's model wrapped in a :class:`Predictor`, and its provenance.

    Raises:
        lstv.errors.CheckpointNotFoundError: the file is missing (the message says how to get
            the real one).
        lstv.errors.CheckpointError: the file is not a point-net checkpoint.
    """
    from lstv.model import load_checkpoint

    torch.manual_seed(0)
    dev = resolve_device(device)
    model, info = load_checkpoint(checkpoint, device=dev)
    return Predictor(model, dev), info
