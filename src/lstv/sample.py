"""What a reader hands the model for one study, and the one model-pixel -> original mapping.

``lstv infer``, training, the notebook API and the web demo all read a study the same way: the
series becomes a sorted 8-bit volume, the centre slice ``D // 2`` becomes the model's input, and
points found on the model's maps are mapped back to the original slice here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstv.studies import StudyTask

log = logging.getLogger(__name__)


def model_to_original(
    point: tuple[float, float], model_size: int, original_shape: tuple[int, int]
) -> tuple[float, float]:
    """(x, y) in a ``model_size`` square map -> (x, y) in pixels of the original slice.

    The model's input is the whole slice resized to a square, so each axis scales on its own.
    """
    height, width = original_shape
    return point[0] * width / model_size, point[1] * height / model_size


def original_to_model(
    point: tuple[float, float], model_size: int, original_shape: tuple[int, int]
) -> tuple[float, float]:
    """The inverse of :func:`model_to_original`."""
    height, width = original_shape
    return point[0] * model_size / width, point[1] * model_size / height


@dataclass(frozen=True)
class Sample:
    """What the reader hands the model for one study: the centre slice and its geometry, and the
    parasagittal slices' inputs when asked for (``lstv infer --parasagittal``)."""

    task: StudyTask
    image: np.ndarray  # (S, S) uint8 model input
    slice_pixels: np.ndarray  # (H, W) uint8 original centre slice
    slice_index: int
    n_slices: int
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    side_offsets: tuple[int, ...] = ()  # parasagittal slices, from the centre (-1, +1, ...)
    side_images: np.ndarray | None = None  # (len(side_offsets), S, S) uint8 model inputs
    acquisition: dict = field(default_factory=dict)  # lstv.acquisition.descriptors, or {}

    @property
    def slice_shape(self) -> tuple[int, int]:
        return tuple(self.slice_pixels.shape)

    @property
    def model_size(self) -> int:
        return int(self.image.shape[-1])

    def to_original(self, point: tuple[float, float]) -> tuple[float, float]:
        """A point on the model's maps in pixels of the original slice."""
        return model_to_original(point, self.model_size, self.slice_shape)

    def pixel_to_patient(self, x: float, y: float) -> list[float]:
        from lstv.dicom import pixel_to_patient

        mm = pixel_to_patient(self.position, self.orientation, self.pixel_spacing, x, y)
        return [float(v) for v in mm]


@dataclass(frozen=True)
class Failure:
    """A study that could not be analysed, and at which stage; one row of ``failures.csv``."""

    task: StudyTask
    stage: str
    error: str


def read_sample(
    task: StudyTask, images_dir: Path, image_size: int, parasagittal: int = 0
) -> Sample:
    """Read one study's series and cut out the model's input, and the inputs of the
    ``parasagittal`` slices on each side of the centre that the series has. Raises on bad
    input."""
    from lstv.acquisition import descriptors
    from lstv.dicom import read_slices
    from lstv.inference import centre_input, input_slices, model_inputs, parasagittal_offsets

    series = read_slices(task.series_source(images_dir))
    n_slices = len(series.planes)
    index = n_slices // 2  # the centre slice, as lstv.dicom.Series.centre_index
    # Only the slices the model reads become 8-bit (windowed by the whole series'
    # percentiles): the same numbers as read_series(...).volume[part], a third of the work.
    offsets = parasagittal_offsets(n_slices, parasagittal)
    if offsets:
        part = input_slices(n_slices, parasagittal)
        volume = series.volume(part)
        images = model_inputs(volume, image_size, (0, *offsets))
        centre = volume[index - part.start]
    else:  # the centre alone: its neighbours would only choose the resize's path
        centre = series.volume(slice(index, index + 1))[0]
        images = centre_input(centre, n_slices, image_size)[None]
    return Sample(
        task=task,
        image=images[0],
        side_offsets=offsets,
        side_images=images[1:] if offsets else None,
        slice_pixels=centre,
        slice_index=index,
        n_slices=n_slices,
        position=series.positions[index],
        orientation=series.orientations[index],
        pixel_spacing=series.pixel_spacings[index],
        # From the 16-bit centre slice, before the windowing: the drift check's descriptors.
        acquisition=descriptors(
            series.planes[index], series.pixel_spacings[index], series.positions, index
        ),
    )


class SampleReader:
    """Map-style dataset for a DataLoader: a Sample, or a Failure instead of raising."""

    def __init__(
        self, tasks: list[StudyTask], images_dir: Path, image_size: int, parasagittal: int = 0
    ):
        self.tasks = tasks
        self.images_dir = Path(images_dir)
        self.image_size = image_size
        self.parasagittal = parasagittal

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> Sample | Failure:
        task = self.tasks[i]
        if task.series_id is None:
            return Failure(task, "select", task.note or "study has no sagittal T2 series")
        try:
            return read_sample(task, self.images_dir, self.image_size, self.parasagittal)
        except Exception as exc:  # one bad study must not stop the run
            return Failure(task, "read", f"{type(exc).__name__}: {exc}")


# --- reading in worker processes ------------------------------------------------------------

_WORKER_READER: SampleReader | None = None


# How much lower than the run's own the readers' CPU priority goes once a model runs on the
# CPU (``SampleStream.yield_to_model``): to the lowest. The forward pass's threads then have
# the cores to themselves while they run; a reader that preempts one stalls the others at the
# end of each parallel layer. The readers take the cores while the model does not (the
# metrics, a wait for a study), and both of them when the model waits for a study.
READER_NICENESS = 19


def _init_worker(reader: SampleReader, parent_pid: int, niceness: int = 0) -> None:
    """Runs once in each reader process."""
    import signal
    import threading

    global _WORKER_READER
    _WORKER_READER = reader
    if niceness:
        _lower_priority(0, niceness)
    # Ctrl-C reaches the whole process group: the parent alone decides how to stop. The parent's
    # SIGTERM handler (a clean stop) is inherited through fork: a reader just ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _lower_priority(pid: int, niceness: int) -> None:
    """Make process ``pid`` (0: this one) ``niceness`` nicer than this process, at most 19;
    where the system has no such call, or refuses it, the reader keeps its priority."""
    import os

    try:
        own = os.getpriority(os.PRIO_PROCESS, os.getpid())
        os.setpriority(os.PRIO_PROCESS, pid, min(19, own + niceness))
    except (AttributeError, OSError) as exc:  # no setpriority (Windows); a reader gone
        log.debug("reader priority unchanged: %s", exc)


def _exit_with_parent(parent_pid: int) -> None:
    """A reader whose parent died (SIGKILL, OOM killer) must not linger on the node."""
    import os
    import time

    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _read_in_worker(i: int) -> Sample | Failure:
    return _WORKER_READER[i]


class _ReaderPool:
    """A process pool that reads samples; it can be stopped at once, readers and all."""

    def __init__(self, reader: SampleReader, workers: int, niceness: int = 0):
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork" if os.name == "posix" else "spawn"),
            initializer=_init_worker,
            initargs=(reader, os.getpid(), niceness),
        )

    def submit(self, i: int):
        return self.executor.submit(_read_in_worker, i)

    def processes(self) -> list:
        return list((getattr(self.executor, "_processes", None) or {}).values())

    def lower_priority(self, niceness: int) -> None:
        for p in self.processes():
            _lower_priority(p.pid, niceness)

    def stop(self) -> None:
        processes = self.processes()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for p in processes:  # a reader busy with a huge series would otherwise run on
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)


def _read_alone(reader: SampleReader, i: int) -> Sample | Failure:
    """Read one study in a process of its own: if the reader dies, only this study fails."""
    from concurrent.futures.process import BrokenProcessPool

    pool = _ReaderPool(reader, 1)
    try:
        return pool.submit(i).result()
    except BrokenProcessPool:
        return Failure(
            reader.tasks[i],
            "read",
            "the reader process died while reading this study (killed, e.g. out of memory)",
        )
    finally:
        pool.stop()


def _read_whole(future) -> bool:
    """A reader's future that holds its sample (or its study's Failure)."""
    return future is not None and future.done() and not future.cancelled() and (
        future.exception() is None
    )


def iter_samples(reader: SampleReader, num_workers: int) -> SampleStream:
    """Samples in task order, read by ``num_workers`` processes (0 = in this process).

    The readers start at once, before the stream is iterated, so the caller can load its model
    while the first studies are decoded. Close the stream (or use ``contextlib.closing``) to
    stop the readers at once.
    """
    return SampleStream(reader, num_workers)


class SampleStream:
    """Samples in task order from reader processes that are already at work.

    A reader process that dies (the OOM killer, a crash in a decoder) does not end the run:
    the studies in flight are read again one at a time in fresh processes, so only the study
    that kills its reader becomes a failure.
    """

    # Studies read ahead of the model, per reader: enough to cover a model's import and load
    # at the start (a reader reads ~12 phantom studies a second on a core of its own; the
    # model's import and load take 2-3 s on a 2-core machine), small enough that memory does
    # not depend on how many studies there are (32 samples of a 512 x 512 series: ~10 MB per
    # reader). At 8 the readers of a 2-core run stopped after 16 studies, a second before the
    # model was loaded, and left a core idle (issue 22's start-up timeline).
    READ_AHEAD = 32

    def __init__(self, reader: SampleReader, num_workers: int):
        from collections import deque

        self.reader = reader
        n = len(reader)
        self.workers = min(num_workers, n) if num_workers > 0 and n > 1 else 0
        self.pending: deque = deque()
        self.next_i = 0
        self.niceness = 0
        self.pool = _ReaderPool(reader, self.workers) if self.workers else None
        self._fill()

    def n_read(self) -> int:
        """Studies read and not yet handed out."""
        return sum(_read_whole(future) for _, future in self.pending)

    def yield_to_model(self) -> None:
        """From now on the readers run at a lower CPU priority (:data:`READER_NICENESS`): for
        a model on the CPU, once it is loaded (its import and load overlap the first reads at
        full priority)."""
        self.niceness = READER_NICENESS
        if self.pool is not None:
            self.pool.lower_priority(self.niceness)

    def _fill(self) -> None:
        if self.pool is None:
            return
        while self.next_i < len(self.reader) and len(self.pending) < self.READ_AHEAD * self.workers:
            self.pending.append((self.next_i, self.pool.submit(self.next_i)))
            self.next_i += 1

    def __iter__(self) -> Iterator[Sample | Failure]:
        from concurrent.futures.process import BrokenProcessPool

        if self.pool is None:
            yield from (self.reader[i] for i in range(len(self.reader)))
            return
        try:
            while self.pending:
                i, future = self.pending.popleft()
                try:
                    item = future.result()
                except BrokenProcessPool:
                    yield from self._read_in_flight_alone(i)
                    continue
                self._fill()
                yield item
        finally:
            self.close()

    def _read_in_flight_alone(self, i: int) -> Iterator[Sample | Failure]:
        self.pool.stop()
        # Studies read before the reader died keep their samples (up to READ_AHEAD per
        # reader); the others are read again, one at a time.
        in_flight = [(i, None), *self.pending]
        self.pending.clear()
        retry = [j for j, future in in_flight if not _read_whole(future)]
        log.warning("a reader process died; reading %d studies one by one", len(retry))
        for j, future in in_flight:
            yield future.result() if _read_whole(future) else _read_alone(self.reader, j)
        self.pool = _ReaderPool(self.reader, self.workers, self.niceness)
        self._fill()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
