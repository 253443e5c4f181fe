"""Geometry in the canonical mm frame (curves, bands, endplates) and its placement in the image.

The canonical frame has u = anterior -> posterior and v = superior -> inferior; a
:class:`Placement` maps it onto image columns and rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lstv.phantom.anatomy import Anatomy, PlacedBody, axis_vectors

log = logging.getLogger(__name__)

SAGITTAL_ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """Where the slices of a series lie in patient space (LPS, mm).

    Attributes:
        rows, cols: matrix size.
        pixel_spacing: mm between pixel centres (rows and columns alike).
        slice_thickness, spacing_between_slices: mm.
        positions: (D, 3) ImagePositionPatient (centre of the top-left pixel) of each slice,
            in increasing slice-normal order.
        orientation: ImageOrientationPatient (row cosines, then column cosines).
    """

    rows: int
    cols: int
    pixel_spacing: float
    slice_thickness: float
    spacing_between_slices: float
    positions: np.ndarray
    orientation: tuple[float, ...] = SAGITTAL_ORIENTATION


_EDGE_T = np.linspace(0.0, 1.0, 8)
_CORNER_T = np.linspace(0.15, 0.85, 4)[None, :, None]
_NEXT = np.array([1, 2, 3, 0])
_CIRCLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Quadratic Bezier points; all arguments broadcast (``ts`` carries a trailing axis)."""
    return (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * c + ts**2 * p1


def rounded_quad(corners: np.ndarray, bulge: tuple[float, ...], radius: float) -> np.ndarray:
    """A quadrilateral with curved edges and rounded corners, as a dense polygon.

    Args:
        corners: (4, 2) corners in drawing order.
        bulge: per edge (corner i -> i+1), how far its middle is pushed towards the centroid
            (negative: outward), mm.
        radius: corner rounding, mm.
    """
    a = np.asarray(corners, float)
    b = a[_NEXT]
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1]) + 1e-6
    normal = np.stack([-d[:, 1], d[:, 0]], 1) / length[:, None]
    mid = (a + b) / 2
    inward = np.einsum("ij,ij->i", a.mean(axis=0) - mid, normal)
    sign = np.where(inward < 0, -1.0, 1.0)
    ctrl = mid + normal * (sign * 2 * np.asarray(bulge, float))[:, None]
    tau = np.minimum(0.45, radius / length)[:, None]
    ts = (tau + (1 - 2 * tau) * _EDGE_T[None, :])[..., None]
    edges = _bezier(a[:, None], ctrl[:, None], b[:, None], ts)
    # Each corner is a Bezier from the end of one edge to the start of the next, pulled to it.
    corner = _bezier(edges[:, -1][:, None], b[:, None], edges[_NEXT, 0][:, None], _CORNER_T)
    return np.concatenate([edges, corner], axis=1).reshape(-1, 2)


def ellipse_polygon(
    centre: np.ndarray, axes: tuple[float, float], angle_deg: float, n: int = 28
) -> np.ndarray:
    """Polygon of an ellipse; ``axes`` are the semi-axes along (t, n) of ``angle_deg``."""
    if n not in _CIRCLES:
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        _CIRCLES[n] = (np.cos(phi)[:, None], np.sin(phi)[:, None])
    cos, sin = _CIRCLES[n]
    t, nn = axis_vectors(angle_deg)
    return centre + cos * (axes[0] * t) + sin * (axes[1] * nn)


def smooth_line(points: np.ndarray, step: float, window_mm: float) -> np.ndarray:
    """Resample a polyline to ``step`` mm and smooth it with a moving average."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    grid = np.arange(0.0, s[-1] + 1e-6, step)
    line = np.stack([np.interp(grid, s, points[:, 0]), np.interp(grid, s, points[:, 1])], 1)
    k = max(1, int(round(window_mm / step)))
    if k > 1:
        pad = np.concatenate([np.repeat(line[:1], k, 0), line, np.repeat(line[-1:], k, 0)])
        kernel = np.ones(2 * k + 1) / (2 * k + 1)
        line = np.stack([np.convolve(pad[:, j], kernel, mode="valid") for j in range(2)], 1)
    return line


def line_normals(line: np.ndarray) -> np.ndarray:
    """Posterior unit normals of a top-to-bottom line (the n of :func:`axis_vectors`)."""
    tangent = np.gradient(line, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    return np.stack([tangent[:, 1], -tangent[:, 0]], 1)


def band_polygon(line: np.ndarray, normals: np.ndarray, a, b) -> np.ndarray:
    """Polygon between offsets ``a`` and ``b`` (scalars or per-point arrays) along the normals."""
    a = np.broadcast_to(np.asarray(a, float), (len(line),))[:, None]
    b = np.broadcast_to(np.asarray(b, float), (len(line),))[:, None]
    return np.concatenate([line + normals * a, (line + normals * b)[::-1]])


def extend_line(points: np.ndarray, before: float, after: float) -> np.ndarray:
    """Extend a polyline straight beyond its ends by ``before``/``after`` mm."""
    d0 = points[0] - points[1]
    d1 = points[-1] - points[-2]
    d0 /= np.linalg.norm(d0)
    d1 /= np.linalg.norm(d1)
    return np.concatenate([[points[0] + d0 * before], points, [points[-1] + d1 * after]])


def lateral_fraction(dx: float, half_width: float) -> float:
    """Fraction of a structure's sagittal extent left at lateral offset ``dx`` (ellipsoid)."""
    r = dx / half_width if half_width > 0 else 2.0
    return math.sqrt(1.0 - r * r) if abs(r) < 1.0 else 0.0


def endplate_ends(body: PlacedBody, which: str, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """(anterior end, posterior end) of a body's endplate in a slice ``dx`` mm off the midline.

    Laterally the anterior wall recedes faster than the posterior one (bodies are kidney-shaped).
    """
    v = body.vertebra
    if which == "sup":
        centre, angle, depth = body.sup_centre, body.sup_angle, v.depth
    else:
        centre, angle, depth = body.inf_centre, body.inf_angle, v.depth * v.taper
    _, n = axis_vectors(angle)
    f = lateral_fraction(dx, v.half_width)
    ant = depth / 2 - 0.72 * (1 - f) * depth
    post = depth / 2 - 0.28 * (1 - f) * depth
    return centre - n * ant, centre + n * post


# --------------------------------------------------------------------------------------------
# Placement in the image
# --------------------------------------------------------------------------------------------
# The vertebra whose body the top of the field of view cuts, as on real lumbar protocols: from
# T10 (three thoracic discs in view) to L1 (the first disc in view is L1/L2, nothing to count
# from).
FOV_TOPS = ("T10", "T11", "T12", "L1")
# In-plane rotation of the column in the image, degrees (see place_in_image).
ROTATION_RANGE = (-28.0, 14.0)
_FOV_TOP_WEIGHTS = (0.25, 0.3, 0.3, 0.15)


@dataclass(frozen=True)
class Placement:
    """Maps canonical mm (u, v) to pixel (column, row): ``(R @ p + offset) / spacing``.

    ``top`` names the vertebra whose body the first image row cuts (one of :data:`FOV_TOPS`).
    """

    rotation: float
    offset: tuple[float, float]
    spacing: float
    rows: int
    cols: int
    top: str = ""

    def __post_init__(self) -> None:
        a = math.radians(self.rotation)
        c, s = math.cos(a), math.sin(a)
        # Row-vector form: pixels = pts @ matrix + shift.
        object.__setattr__(self, "_matrix", np.array([[c, s], [-s, c]]) / self.spacing)
        object.__setattr__(self, "_shift", np.asarray(self.offset, float) / self.spacing)

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, float) @ self._matrix + self._shift


def place_in_image(
    rng: np.random.Generator, anatomy: Anatomy, rows: int, cols: int, spacing: float
) -> Placement:
    """Rotate and shift the column: the top of the view cuts a body from T10 to L1, and the
    top of the sacrum is in view (two sacral segments where the field of view allows).

    A top that would push the sacrum out of a short field of view moves down a vertebra.
    """
    sacrum = "S2" if anatomy.kind == "lumbarization" else "S1"
    # The patient's pelvic tilt on the table: the rotation that gives the first sacral segment
    # its drawn lumbosacral angle against the image's horizontal (image angle = frame angle -
    # rotation), kept within what a lumbar protocol's field of view holds.
    base = anatomy.bodies[anatomy.index(sacrum)].sup_angle
    target = anatomy.extra.get("ferguson_target", base)
    rotation = float(np.clip(base - target + rng.normal(0.0, 1.0), *ROTATION_RANGE))
    probe = Placement(rotation, (0.0, 0.0), 1.0, rows, cols)
    must = anatomy.bodies[anatomy.index(sacrum)]
    want = anatomy.bodies[anatomy.index(sacrum) + 1]
    must_y = float(probe.to_pixels(np.array([*endplate_ends(must, "sup", 0.0)]))[:, 1].max()) + 15.0
    want_y = float(probe.to_pixels(np.array([*endplate_ends(want, "inf", 0.0)]))[:, 1].max()) + 4.0
    l3 = anatomy.bodies[anatomy.index("L3")]
    l3_post = probe.to_pixels(endplate_ends(l3, "sup", 0.0)[1])
    height_mm, width_mm = rows * spacing, cols * spacing
    first = int(rng.choice(len(FOV_TOPS), p=_FOV_TOP_WEIGHTS))
    for name in FOV_TOPS[first:]:
        body = anatomy.bodies[anatomy.index(name)]
        y_sup = float(probe.to_pixels(body.sup_centre)[1])
        y_inf = float(probe.to_pixels(body.inf_centre)[1])
        # The first row crosses the body, never a disc; below L1 the L1/L2 disc stays well in.
        lo = y_sup + 0.2 * (y_inf - y_sup)
        hi = y_sup + (0.45 if name == "L1" else 0.7) * (y_inf - y_sup)
        low_enough = [
            max(lo, y - height_mm) for y in (want_y, must_y) if max(lo, y - height_mm) <= hi
        ]
        if low_enough:
            top = rng.uniform(low_enough[0], hi)
            break
    else:
        log.debug("field of view %.0f mm is short for this column", height_mm)
        top = lo
    du = width_mm * rng.uniform(0.50, 0.62) - float(l3_post[0])
    return Placement(rotation, (du, -top), spacing, rows, cols, name)


def lumbosacral_angle_deg(anatomy: Anatomy, placement: Placement) -> float:
    """Ferguson's angle: the superior endplate of the segment counted as S1 (the anatomical S1:
    in a lumbarized column the squared, mobile one) against the image's horizontal, degrees."""
    body = anatomy.bodies[anatomy.index("S1")]
    ant, post = (placement.to_pixels(p) for p in endplate_ends(body, "sup", 0.0))
    dx, dy = post - ant
    return float(math.degrees(math.atan2(-dy, dx)))
