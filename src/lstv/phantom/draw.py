"""Drawing one sagittal slice as a tissue label map."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lstv.phantom.anatomy import Anatomy, Degeneration, PlacedBody, axis_vectors
from lstv.phantom.geometry import (
    Placement,
    band_polygon,
    ellipse_polygon,
    endplate_ends,
    extend_line,
    lateral_fraction,
    line_normals,
    rounded_quad,
    smooth_line,
)
from lstv.phantom.tissues import (
    ABDOMEN,
    AIR,
    ANNULUS,
    BLADDER,
    BLUR0,
    BOWEL0,
    CORD,
    CORTEX,
    CSF,
    EPIDURAL_FAT,
    FACET_FLUID,
    FAT,
    LIGAMENT,
    LIVER,
    MARROW,
    MODIC_FAT,
    MODIC_OEDEMA,
    MUSCLE,
    N_LABELS,
    NERVE,
    NUCLEUS0,
    POST_BONE,
    SCLEROSIS,
    SKIN,
    VESSEL,
)


class _Canvas:
    """A label map with polygon drawing in canonical mm coordinates."""

    def __init__(self, placement: Placement):
        self.p = placement
        self.labels = np.zeros((placement.rows, placement.cols), np.uint8)
        self.px_mm = 1.0 / placement.spacing

    def _pts(self, poly: np.ndarray) -> np.ndarray:
        # cv2 takes fixed-point vertices: 4 fractional bits (shift=4).
        return np.rint(self.p.to_pixels(poly) * 16).astype(np.int32)

    def fill(self, poly: np.ndarray, label: int) -> None:
        cv2.fillPoly(self.labels, [self._pts(poly)], int(label), cv2.LINE_8, 4)

    def line(self, poly: np.ndarray, label: int, width_mm: float, closed: bool = False) -> None:
        thickness = max(1, int(round(width_mm * self.px_mm)))
        cv2.polylines(self.labels, [self._pts(poly)], closed, int(label), thickness, cv2.LINE_8, 4)


def _column_lines(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior wall line (smoothed, top->bottom) and per-point canal depth and CSF fraction."""
    pts, depth, csf = [], [], []
    a = anatomy
    sacral_depths = {"S1": 13.0, "S2": 10.0, "S3": 8.0, "S4": 6.0, "S5": 4.0}
    sacrum_top = "S2" if a.kind == "lumbarization" else "S1"
    in_sacrum = False
    for body in a.bodies:
        shape = body.vertebra.shape
        if shape == "coccygeal":
            break
        in_sacrum = in_sacrum or body.name == sacrum_top
        for which in ("sup", "inf"):
            pts.append(endplate_ends(body, which, 0.0)[1])
            if in_sacrum:
                d = sacral_depths[body.name] * (0.9 if which == "inf" else 1.0)
            elif shape == "thoracic":
                d = a.canal_depth["thoracic"]
            else:
                d = a.canal_depth["lumbar"]
            depth.append(d)
            # The thecal sac ends at S2: CSF fades from the top of S2 to its lower third.
            if body.name == "S2":
                csf.append(0.85 if which == "sup" else 0.0)
            elif body.name in ("S3", "S4", "S5"):
                csf.append(0.0)
            else:
                csf.append(1.0)
    pts = np.array(pts)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    line = smooth_line(extend_line(pts, 120.0, 5.0), 1.0, 3.0)
    ls = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(line, axis=0).T))]) - 120.0
    return line, np.interp(ls, s, depth), np.interp(ls, s, csf)


def _anterior_line(anatomy: Anatomy) -> np.ndarray:
    pts = []
    for body in anatomy.bodies:
        if body.vertebra.shape == "coccygeal":
            break
        pts.append(endplate_ends(body, "sup", 0.0)[0])
        pts.append(endplate_ends(body, "inf", 0.0)[0])
    return smooth_line(extend_line(np.array(pts), 150.0, 40.0), 2.0, 6.0)


@dataclass(frozen=True, eq=False)
class _Lines:
    """Reference lines of a column (mm), shared by all its slices.

    Attributes:
        wall, wall_n: posterior wall of the bodies (top to bottom) and its posterior normals.
        canal, csf: canal depth (mm) and thecal-sac fraction (0..1) at each wall point.
        rough, rough_n: a heavily smoothed wall line, for skin, fat and muscle offsets.
        ant, ant_n: anterior wall of the bodies, for vessels, psoas and bowel.
    """

    wall: np.ndarray
    wall_n: np.ndarray
    canal: np.ndarray
    csf: np.ndarray
    rough: np.ndarray
    rough_n: np.ndarray
    ant: np.ndarray
    ant_n: np.ndarray


def _lines(a: Anatomy) -> _Lines:
    cached = a.cache.get("lines")
    if isinstance(cached, _Lines):
        return cached
    wall, canal, csf = _column_lines(a)
    rough = smooth_line(extend_line(wall, 0.0, 250.0), 4.0, 40.0)
    ant = _anterior_line(a)
    lines = _Lines(
        wall, line_normals(wall), canal, csf, rough, line_normals(rough), ant, line_normals(ant)
    )
    a.cache["lines"] = lines
    return lines


def _draw_soft_tissue(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Air, skin, fat, paraspinal muscle, abdomen, liver, bowel, vessels, pelvis."""
    rough, rough_n, wall, wall_n, canal = ln.rough, ln.rough_n, ln.wall, ln.wall_n, ln.canal
    n_pts = len(rough)
    # Offsets from a heavily smoothed posterior wall line; the buttocks bulge below the sacrum.
    ramp = np.clip((np.arange(n_pts) - n_pts * 0.78) / (n_pts * 0.22), 0, 1)
    belly = np.sin(np.linspace(0, np.pi, n_pts)) * 25.0
    muscle_back = a.muscle_depth + a.spinous_length * 0.2 + 25.0 * ramp
    skin_back = muscle_back + a.fat_thickness + 12.0 * ramp
    front = -(a.abdominal_depth + belly + 40.0 * ramp)
    wall_fat = a.fat_thickness * 0.6
    cv.fill(band_polygon(rough, rough_n, front - 3.0, skin_back + 2.0), SKIN)
    cv.fill(band_polygon(rough, rough_n, front, skin_back), FAT)
    cv.fill(band_polygon(rough, rough_n, front + wall_fat, front + wall_fat + 9.0), MUSCLE)
    cv.fill(band_polygon(rough, rough_n, front + wall_fat + 9.0, -10.0), ABDOMEN)
    # Liver (and heart above it) anterior to the lower thoracic spine.
    t12 = a.bodies[a.index("T12")]
    cv.fill(ellipse_polygon(t12.sup_centre + np.array([-105.0, -25.0]), (95.0, 80.0), 10.0), LIVER)
    ant, ant_n = ln.ant, ln.ant_n
    l1 = a.bodies[a.index("L1")]
    first = int(np.argmin(np.hypot(*(ant - l1.sup_centre).T)))
    # Bowel loops: ellipsoids cut by the slice, each with a darker wall.
    room = a.abdominal_depth - a.vessel_depth - 30.0
    for (pos, depth, xc, ru, rv, rx, ang), label in zip(
        a.bowel, range(BOWEL0, N_LABELS), strict=False
    ):
        f = lateral_fraction(dx - xc, rx)
        if f <= 0:
            continue
        i = min(first + int(pos * (len(ant) - first)), len(ant) - 1)
        dist = a.vessel_depth + 8.0 + ru + depth * max(room - 2 * ru, 0.0)
        c = ant[i] - ant_n[i] * dist
        cv.fill(ellipse_polygon(c, (rv * f + 1.0, ru * f + 1.0), ang, 20), MUSCLE)
        cv.fill(ellipse_polygon(c, (rv * f, ru * f), ang, 20), label)
    # Pelvis: rectum in front of the lower sacrum, bladder in front of it.
    s3 = a.bodies[a.index("S3")]
    _, n3 = axis_vectors(s3.vertebra.angle)
    f = lateral_fraction(dx, 22.0)
    if f > 0:
        rectum = s3.inf_centre - n3 * (s3.vertebra.depth / 2 + 22.0)
        cv.fill(ellipse_polygon(rectum, (30.0, 16.0 * f), s3.vertebra.angle), MUSCLE)
        cv.fill(ellipse_polygon(rectum, (27.0, 13.0 * f), s3.vertebra.angle), BOWEL0)
    f = lateral_fraction(dx, 45.0)
    if f > 0:
        bladder = s3.inf_centre - n3 * (s3.vertebra.depth / 2 + 85.0) + np.array([0.0, 25.0])
        cv.fill(ellipse_polygon(bladder, (38.0 * f, 45.0 * f), 0.0), BLADDER)
    # Paraspinal muscle behind the canal; at the midline only between the processes.
    behind = canal + 2.0
    cv.fill(band_polygon(rough, rough_n, 18.0, muscle_back), MUSCLE)
    cv.fill(band_polygon(wall, wall_n, behind, behind + 10.0), MUSCLE)
    # Prevertebral vessels: aorta (patient left, +x) and IVC, ending at the L4 bifurcation.
    l4 = a.bodies[a.index("L4")]
    stop = int(np.argmin(np.hypot(*(ant - (l4.sup_centre + l4.inf_centre) / 2).T)))
    for xc, radius in ((6.0, 11.0), (-20.0, 12.0)):
        f = lateral_fraction(dx - xc, radius)
        if f > 0:
            depth = a.vessel_depth * f
            seg = slice(0, stop + 1)
            cv.fill(
                band_polygon(
                    ant[seg],
                    ant_n[seg],
                    -2.5 - (a.vessel_depth - depth) / 2,
                    -2.5 - (a.vessel_depth + depth) / 2,
                ),
                VESSEL,
            )
    # Psoas lateral to the bodies, growing from L1 down to the sacrum.
    f = lateral_fraction(dx, 60.0)
    if abs(dx) > 12.0 and f > 0:
        s1 = a.bodies[a.index("S1")]
        last = int(np.argmin(np.hypot(*(ant - s1.inf_centre).T)))
        grow = np.linspace(0.2, 1.0, max(last - first, 2))
        width = 28.0 * grow * f * min(1.0, (abs(dx) - 12.0) / 8.0)
        seg = slice(first, first + len(grow))
        cv.fill(band_polygon(ant[seg], ant_n[seg], 18.0 * f, 18.0 * f - width), MUSCLE)


def _draw_canal(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Thecal sac with cord and cauda equina; laterally, pedicles and foramina."""
    wall, wall_n, canal, csf = ln.wall, ln.wall_n, ln.canal, ln.csf
    sac = a.sac_half_width
    if abs(dx) > sac + 16.0:
        # Beyond the lateral recess: intertransverse muscle, and the lateral sacral mass.
        cv.fill(band_polygon(wall, wall_n, 0.0, canal + 2.0), MUSCLE)
        sacrum = a.bodies[a.index("S2" if a.kind == "lumbarization" else "S1")]
        i0 = int(np.argmin(np.hypot(*(wall - endplate_ends(sacrum, "sup", 0.0)[1]).T)))
        cv.fill(band_polygon(wall[i0:], wall_n[i0:], -1.0, canal[i0:] + 2.0), MARROW)
        return
    cv.fill(band_polygon(wall, wall_n, 0.0, canal + 2.0), EPIDURAL_FAT)
    cv.fill(band_polygon(wall, wall_n, canal, canal + 2.0), LIGAMENT)
    f = lateral_fraction(dx, sac)
    if f > 0:
        width = (canal - 3.5) * csf * f
        centre = 1.0 + (canal - 3.5) / 2
        cv.fill(band_polygon(wall, wall_n, centre - width / 2, centre + width / 2), CSF)
        # Cord down to the conus near L1/L2, then the cauda equina roots layered dorsally.
        l1 = a.bodies[a.index("L1")]
        conus = l1.inf_centre + (l1.inf_centre - l1.sup_centre) * a.conus_level
        stop = int(np.argmin(np.hypot(*(wall - conus).T)))
        fc = lateral_fraction(dx, a.cord_half_width)
        if fc > 0:
            half = 4.2 * fc * np.clip((stop - np.arange(stop)) / 25.0, 0.25, 1.0)
            mid = (centre + 0.1 * (canal - 3.5))[:stop]
            cv.fill(band_polygon(wall[:stop], wall_n[:stop], mid - half, mid + half), CORD)
        for k, off in enumerate(a.root_offsets):
            lateral = -6.0 + 4.0 * k
            if abs(dx - lateral) > 2.5:
                continue
            end = stop + int((len(wall) - stop) * (0.55 + 0.1 * k))
            seg = slice(max(stop - 5, 0), min(end, len(wall)))
            pos = np.minimum(1.0 + off * (canal[seg] - 3.5), (width / 2 + centre)[seg] - 0.5)
            root = wall[seg] + wall_n[seg] * pos[:, None]
            cv.line(root, NERVE, 0.9)
    # Pedicles and neural foramina between the sac and the facet columns.
    if sac - 2.0 < abs(dx) < sac + 16.0:
        strength = min(1.0, (abs(dx) - sac + 2.0) / 4.0)
        for body, disc in zip(a.bodies[:-1], a.discs, strict=True):
            if body.vertebra.shape in ("sacral", "coccygeal"):
                break
            sup_post = endplate_ends(body, "sup", dx)[1]
            inf_post = endplate_ends(body, "inf", dx)[1]
            _, n = axis_vectors(body.sup_angle)
            h = body.vertebra.height
            ped = np.array(
                [
                    sup_post + n * 0.5,
                    sup_post + n * (_canal_at(a, body) + 1),
                    sup_post + n * (_canal_at(a, body) + 1) + (inf_post - sup_post) * 0.5,
                    sup_post + n * 0.5 + (inf_post - sup_post) * 0.5,
                ]
            )
            cv.fill(rounded_quad(ped, (0.0, 0.0, 0.0, 0.0), 2.0), POST_BONE)
            if disc.kind in ("normal", "thoracic", "rudimentary"):
                fc = inf_post + n * (_canal_at(a, body) * 0.45 + 1.0)
                axes = (0.38 * h * strength + 0.1, _canal_at(a, body) * 0.32 * strength + 0.1)
                cv.fill(ellipse_polygon(fc, axes, body.inf_angle), EPIDURAL_FAT)
                cv.fill(
                    ellipse_polygon(
                        fc - (inf_post - sup_post) * 0.12,
                        (2.8 * strength + 0.1, 2.4 * strength + 0.1),
                        0.0,
                        12,
                    ),
                    NERVE,
                )


def _canal_at(a: Anatomy, body: PlacedBody) -> float:
    """Canal depth (mm) at a mobile vertebra."""
    return a.canal_depth["thoracic" if body.vertebra.shape == "thoracic" else "lumbar"]


def _draw_posterior_elements(cv: _Canvas, a: Anatomy, dx: float, ln: _Lines) -> None:
    """Laminae and spinous processes (midline), facet columns (parasagittal), sacral crest."""
    wall, wall_n, canal = ln.wall, ln.wall_n, ln.canal
    sacrum_top = "S2" if a.kind == "lumbarization" else "S1"
    for body in a.bodies:
        v = body.vertebra
        if v.shape in ("sacral", "coccygeal") or body.name == sacrum_top:
            break
        sup_post = endplate_ends(body, "sup", 0.0)[1]
        inf_post = endplate_ends(body, "inf", 0.0)[1]
        t, n = axis_vectors(v.angle)
        h = v.height
        canal_mm = _canal_at(a, body) + 2.0
        thoracic = v.shape == "thoracic"
        base_top = sup_post + n * canal_mm + t * (0.05 * h)
        base_bot = inf_post + n * canal_mm + t * (0.15 * h)
        if abs(dx) < 4.5:
            length = a.spinous_length * (0.9 if thoracic else 1.0)
            if v.shape == "transitional":
                length *= 0.75
            drop = (0.85 if thoracic else 0.3) * h
            tip_h = (0.28 if thoracic else 0.55) * h
            tip_top = base_top + n * length + t * drop
            poly = np.array([base_top, tip_top, tip_top + t * tip_h, base_bot])
            outline = rounded_quad(poly, (-1.0, 0.0, -1.0, 0.0), 3.0)
            cv.fill(outline, POST_BONE)
            cv.line(outline, CORTEX, 0.8, closed=True)
        elif abs(dx) < 13.0:
            poly = np.array([base_top, base_top + n * 8.0, base_bot + n * 8.0, base_bot])
            outline = rounded_quad(poly, (0.0,) * 4, 2.5)
            cv.fill(outline, POST_BONE)
            cv.line(outline, CORTEX, 0.8, closed=True)
        elif abs(dx) < 26.0:
            # Facet column: superior and inferior articular processes with a joint line.
            top = sup_post + n * (canal_mm - 4.0) - t * (0.1 * h)
            poly = np.array([top, top + n * 16.0, top + n * 16.0 + t * 1.05 * h, top + t * h])
            cv.fill(rounded_quad(poly, (0.0,) * 4, 3.0), POST_BONE)
            joint = np.array([top + t * 0.8 * h + n * 2.0, top + t * 0.95 * h + n * 14.0])
            cv.line(joint, FACET_FLUID, 0.9)
        elif v.shape in ("lumbar", "transitional") and abs(dx) < 48.0:
            # Transverse processes; a transitional vertebra's may be broad and meet the ala.
            state = "normal"
            if body.name == a.transitional_vertebra:
                state = a.transverse[1 if dx > 0 else 0]
            if state == "normal":
                c = sup_post + n * 4.0 + t * (0.35 * h)
                cv.fill(ellipse_polygon(c, (0.22 * h, 6.0), v.angle), POST_BONE)
            else:
                _draw_transverse(cv, a, body, state)
    # Sacral canal roof, a little thicker along the median crest.
    top = endplate_ends(a.bodies[a.index(sacrum_top)], "sup", 0.0)[1]
    bottom = endplate_ends(a.bodies[a.index("S5")], "inf", 0.0)[1]
    i0 = int(np.argmin(np.hypot(*(wall - top).T)))
    i1 = int(np.argmin(np.hypot(*(wall - bottom).T)))
    seg = slice(i0, i1 + 1)
    roof = 8.0 if abs(dx) < 4.0 else 6.0 if abs(dx) < 30.0 else 12.0
    poly = band_polygon(wall[seg], wall_n[seg], canal[seg] + 1.0, canal[seg] + 1.0 + roof)
    cv.fill(poly, POST_BONE)
    cv.line(poly, CORTEX, 0.8, closed=True)


def _draw_transverse(cv: _Canvas, a: Anatomy, body: PlacedBody, state: str) -> None:
    """A dysplastic transverse process (over 19 mm high, Castellvi I) of the transitional
    vertebra, reaching down to the sacral ala where it forms a pseudo-joint (II) or fuses (III).
    """
    v = body.vertebra
    t, n = axis_vectors(v.angle)
    h = v.height
    sup_post = endplate_ends(body, "sup", 0.0)[1]
    top = sup_post + n * 4.0 + t * (0.1 * h)
    if state == "enlarged":
        cv.fill(ellipse_polygon(top + t * 0.45 * h, (0.5 * h, 9.0), v.angle), POST_BONE)
        return
    sacrum = a.bodies[a.index(body.name) + 1]
    ala = endplate_ends(sacrum, "sup", 0.0)[1] + n * 4.0
    reach = float(np.dot(ala - top, t)) + (3.0 if state == "fused" else -1.2)
    centre = top + t * reach / 2
    if state == "fused":  # one piece of bone with the ala: marrow, no joint line
        cv.fill(ellipse_polygon(centre, (reach / 2, 9.5), v.angle), MARROW)
        return
    cv.fill(ellipse_polygon(centre, (reach / 2, 9.0), v.angle), POST_BONE)
    joint = top + t * (reach + 0.6)
    cv.line(np.array([joint - n * 8.0, joint + n * 8.0]), CORTEX, 1.6)
    cv.line(np.array([joint - n * 7.0, joint + n * 7.0]), FACET_FLUID, 0.7)


def _draw_endplate_changes(
    cv: _Canvas, upper: PlacedBody, lower: PlacedBody, quad: np.ndarray, g: Degeneration
) -> None:
    """Modic-like bands under both endplates and spurs at the anterior corners of a disc."""
    ua, up, lp, la = quad
    t_u, n_u = axis_vectors(upper.inf_angle)
    t_l, n_l = axis_vectors(lower.sup_angle)
    if g.modic:
        label = {1: MODIC_OEDEMA, 2: MODIC_FAT, 3: SCLEROSIS}[g.modic]
        # Into the upper body is up (-t), into the lower one down (+t).
        for ant, post, inward in ((ua, up, -t_u), (la, lp, t_l)):
            along = (post - ant) / (np.linalg.norm(post - ant) + 1e-9)
            a2, p2 = ant + along * 2.5, post - along * 2.5
            near, far = inward * 1.0, inward * (1.0 + g.modic_depth)
            band = np.array([a2 + near, p2 + near, p2 + far, a2 + far])
            cv.fill(rounded_quad(band, (0.0,) * 4, 1.5), label)
    if g.osteophyte:
        s = g.osteophyte
        # From each anterior corner, a spur pointing forward and towards the disc.
        for corner, t_, n_, towards in ((ua, t_u, n_u, 1.0), (la, t_l, n_l, -1.0)):
            inside = corner - towards * t_ * 3.0 + n_ * 1.0
            tip = corner - n_ * s + towards * t_ * (0.6 * s)
            spur = np.array([inside, tip, corner + n_ * 3.0])
            cv.fill(spur, MARROW)
            cv.line(spur, CORTEX, 0.7)


def _draw_column(cv: _Canvas, a: Anatomy, dx: float) -> dict[str, tuple[np.ndarray, float]]:
    """Discs, bodies, fused sacral segments. Returns disc name -> (centre mm, disc angle)."""
    centres: dict[str, tuple[np.ndarray, float]] = {}
    bodies = a.bodies
    # Discs first: the bodies drawn after them trim the disc to the endplates.
    quads = []
    for i, d in enumerate(a.discs):
        upper, lower = bodies[i], bodies[i + 1]
        fu = lateral_fraction(dx, upper.vertebra.half_width)
        fl = lateral_fraction(dx, lower.vertebra.half_width)
        ua, up = endplate_ends(upper, "inf", dx)
        la, lp = endplate_ends(lower, "sup", dx)
        centre = (ua + up + la + lp) / 4
        angle = (upper.inf_angle + lower.sup_angle) / 2
        centres[d.name] = (centre, angle)
        if fu <= 0 or fl <= 0:
            quads.append(None)
            continue
        quad = np.array([ua, up, lp, la])
        quads.append(quad)
        if d.kind in ("normal", "thoracic"):
            g = d.degeneration
            bulge = (1.2 if d.kind == "normal" else 0.6) + g.bulge
            poly = rounded_quad(quad, (-0.6, -bulge, -0.6, -bulge), 1.0)
            cv.fill(poly, ANNULUS)
            # Nucleus: hydrated centre, narrower laterally than the annulus.
            fn = lateral_fraction(dx, upper.vertebra.half_width * 0.6)
            if fn > 0:
                _, n_d = axis_vectors(angle)
                depth = np.hypot(*(up - ua))
                half_h = d.height / 2 + (0.8 if d.kind == "normal" else 0.3)
                axes = (half_h * 0.85, depth * 0.41 * fn / max(fu, 1e-3))
                c = centre + n_d * depth * 0.02
                if g.blur > 0:
                    # The border is lost: a mid-signal zone around a smaller nucleus.
                    cv.fill(
                        ellipse_polygon(c, (axes[0], axes[1] * (1 + 0.2 * g.blur)), angle),
                        BLUR0 + i,
                    )
                    axes = (axes[0] * (1 - 0.3 * g.blur), axes[1] * (1 - 0.45 * g.blur))
                cv.fill(ellipse_polygon(c, axes, angle), NUCLEUS0 + i)
                if g.cleft:  # the intranuclear cleft of an ageing disc
                    cv.line(
                        np.array([c - n_d * axes[1] * 0.8, c + n_d * axes[1] * 0.8]), ANNULUS, 0.7
                    )
                if g.vacuum:
                    cv.line(np.array([c - n_d * axes[1] * 0.6, c + n_d * axes[1] * 0.3]), AIR, 0.8)
        elif d.kind == "gap":
            cv.fill(rounded_quad(quad, (0.0,) * 4, 0.5), LIGAMENT)
    for body in bodies:
        v = body.vertebra
        if lateral_fraction(dx, v.half_width) <= 0:
            continue
        sa, sp = endplate_ends(body, "sup", dx)
        ia, ip = endplate_ends(body, "inf", dx)
        quad = np.array([sa, sp, ip, ia])
        concave = 0.9 if v.shape in ("lumbar", "thoracic", "transitional") else 0.3
        radius = {"coccygeal": 2.5, "sacral": 2.5}.get(v.shape, 3.2)
        poly = rounded_quad(quad, (concave, 0.4, concave, 0.7), radius)
        cv.fill(poly, MARROW)
        cv.line(poly, CORTEX, 0.9, closed=True)
        if v.shape in ("lumbar", "thoracic") and abs(dx) < 3.0:
            # Basivertebral vein: a short bright notch in the posterior wall.
            mid = (sp + ip) / 2
            _, n = axis_vectors(v.angle)
            cv.line(np.array([mid, mid - n * 6.0]), EPIDURAL_FAT, 1.0)
    for i, d in enumerate(a.discs):
        g = d.degeneration
        if quads[i] is not None and d.kind in ("normal", "thoracic") and (g.modic or g.osteophyte):
            _draw_endplate_changes(cv, bodies[i], bodies[i + 1], quads[i], g)
    # Fused levels: bony bridge across the disc space, with walls and a faint remnant.
    for i, d in enumerate(a.discs):
        quad = quads[i]
        if quad is None or d.kind not in ("vestigial", "rudimentary"):
            continue
        ua, up, lp, la = quad
        _, n_up = axis_vectors(bodies[i].inf_angle)
        t_up, _ = axis_vectors(bodies[i].inf_angle)
        _, n_lo = axis_vectors(bodies[i + 1].sup_angle)
        t_lo, _ = axis_vectors(bodies[i + 1].sup_angle)
        bridge = np.array(
            [
                ua - t_up * 1.2 + n_up * 1.5,
                up - t_up * 1.2 - n_up * 1.5,
                lp + t_lo * 1.2 - n_lo * 1.5,
                la + t_lo * 1.2 + n_lo * 1.5,
            ]
        )
        cv.fill(bridge, MARROW)
        cv.line(np.array([ua, la]), CORTEX, 0.9)
        cv.line(np.array([up, lp]), CORTEX, 0.9)
        centre, angle = centres[d.name]
        depth = float(np.hypot(*(up - ua)))
        if d.extent > 0:
            axes = (max(d.height / 2, 0.5), depth * d.extent / 2)
            shift = (
                axis_vectors(angle)[1]
                * depth
                * (0.5 - d.extent / 2)
                * (0.4 if d.kind == "rudimentary" else 0.0)
            )
            if d.kind == "rudimentary":
                # Sclerotic endplates around a thin, dim disc remnant.
                cv.fill(
                    ellipse_polygon(centre + shift, (axes[0] + 0.9, axes[1] + 0.5), angle), CORTEX
                )
            cv.fill(ellipse_polygon(centre + shift, axes, angle), NUCLEUS0 + i)
        else:
            cv.line(
                np.array(
                    [
                        centre - axis_vectors(angle)[1] * depth * 0.3,
                        centre + axis_vectors(angle)[1] * depth * 0.3,
                    ]
                ),
                NUCLEUS0 + i,
                0.6,
            )
    return centres


def draw_slice(
    a: Anatomy, placement: Placement, dx: float
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, float]]]:
    """Label map of one sagittal slice ``dx`` mm from the midline, and its disc centres (mm)."""
    cv = _Canvas(placement)
    ln = _lines(a)
    _draw_soft_tissue(cv, a, dx, ln)
    _draw_canal(cv, a, dx, ln)
    _draw_posterior_elements(cv, a, dx, ln)
    centres = _draw_column(cv, a, dx)
    return cv.labels, centres
