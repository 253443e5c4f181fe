"""What a reader hands the model (lstv.sample): the one model-pixel <-> original mapping."""

import os

import numpy as np
import pytest

from lstv.sample import Sample, model_to_original, original_to_model
from lstv.studies import StudyTask


def test_each_axis_scales_on_its_own():
    # a 400-row, 320-column slice squeezed into 160 x 160: x by 2, y by 2.5
    assert model_to_original((80.0, 40.0), 160, (400, 320)) == (160.0, 100.0)
    assert original_to_model((160.0, 100.0), 160, (400, 320)) == (80.0, 40.0)


@pytest.mark.parametrize("shape", [(512, 512), (384, 256), (97, 211)])
def test_the_mapping_and_its_inverse_round_trip(shape):
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(0, 160, (20, 2)):
        back = original_to_model(model_to_original((x, y), 160, shape), 160, shape)
        assert back == pytest.approx((x, y))


def test_a_sample_maps_its_points_through_its_own_slice():
    sample = Sample(
        task=StudyTask(1, 2, "Sagittal T2/STIR"),
        image=np.zeros((96, 96), np.uint8),
        slice_pixels=np.zeros((300, 200), np.uint8),
        slice_index=4,
        n_slices=9,
        position=np.array([0.0, 0.0, 0.0]),
        orientation=np.array([0, 1, 0, 0, 0, -1], dtype=float),
        pixel_spacing=np.array([0.5, 0.8]),
    )
    assert sample.model_size == 96 and sample.slice_shape == (300, 200)
    assert sample.to_original((48.0, 48.0)) == (100.0, 150.0)
    # pixel (x=100, y=150): 150 rows of 0.5 mm down (-z), 100 columns of 0.8 mm along +y
    assert sample.pixel_to_patient(100.0, 150.0) == pytest.approx([0.0, 80.0, -75.0])


class _PidReader:
    """Reads nothing: each item is the reader process's id and CPU niceness."""

    def __init__(self, n: int):
        self.tasks = list(range(n))

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int):
        import os

        return os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)


def test_readers_yield_the_cpu_to_a_model_once_asked():
    import os

    from lstv.sample import READER_NICENESS, iter_samples

    own = os.getpriority(os.PRIO_PROCESS, 0)
    stream = iter_samples(_PidReader(40), 2)
    try:
        items = iter(stream)
        first = [next(items) for _ in range(2)]
        assert {nice for _, nice in first} == {own}  # full priority while the model loads
        stream.yield_to_model()
        pids = [p.pid for p in stream.pool.processes()]
        assert len(pids) == 2
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {
            min(19, own + READER_NICENESS)
        }
    finally:
        stream.close()


def test_infer_on_the_cpu_lowers_its_readers_priority(monkeypatch, tmp_path, phantom_dataset,
                                                      tiny_checkpoint):  # fmt: skip
    from helpers import phantom_infer_config
    from lstv.pipeline import run_inference
    from lstv.sample import SampleStream

    asked = []
    real = SampleStream.yield_to_model

    def spy(self):
        asked.append(self.workers)
        real(self)

    monkeypatch.setattr(SampleStream, "yield_to_model", spy)
    config = phantom_infer_config(
        phantom_dataset, tmp_path / "out", tiny_checkpoint, num_workers=2, n_trial=3, mode="trial"
    )
    summary = run_inference(config)
    assert summary.n_completed == 3 and asked == [2]


def test_readers_read_on_while_the_model_loads():
    """Nothing consumes the stream while the model imports and loads (seconds): the readers
    must read on through it. At 8 studies per reader they stopped after 16 and left a core
    idle for the rest of the load (issue 22's start-up timeline)."""
    import time

    from lstv.sample import iter_samples

    stream = iter_samples(_PidReader(80), 2)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(f.done() for _, f in stream.pending) < 48:
            time.sleep(0.05)
        assert sum(f.done() for _, f in stream.pending) >= 48  # 24 per reader, unconsumed
        assert len(stream.pending) <= 64  # and memory stays bounded, whatever the run's size
        items = list(stream)
        assert len(items) == 80 and {nice for _, nice in items[:48]} == {
            os.getpriority(os.PRIO_PROCESS, 0)
        }
    finally:
        stream.close()


class _DyingPidReader(_PidReader):
    """Item ``victim`` kills its reader a second after it starts (as the OOM killer would);
    the others are read at once."""

    victim = 2

    def __getitem__(self, i: int):
        import time

        if i == self.victim:
            time.sleep(1.0)
            os._exit(1)
        return os.getpid(), i


def test_a_dead_reader_costs_only_the_studies_it_had_not_read():
    """The studies read ahead before a reader died keep their samples; only the dead reader's
    study (and any not read yet) is read again alone, each in a fresh process."""
    from lstv.sample import Failure, iter_samples

    items = list(iter_samples(_DyingPidReader(12), 2))
    assert [type(x) for x in items].count(Failure) == 1 and isinstance(items[2], Failure)
    assert [i for _, i in items[:2] + items[3:]] == [0, 1, *range(3, 12)]
    # The living reader read 3..11 while the other slept: one process, none read again.
    assert len({pid for pid, _ in items[3:]}) == 1


def test_a_sample_carries_the_acquisition_of_its_16_bit_centre_slice(phantom_dataset):
    """The drift check's descriptors come from the decoded centre slice (D // 2) before the
    8-bit windowing, and the header: not from a neighbour, nor from the model's 8-bit input."""
    from lstv.acquisition import descriptors
    from lstv.dicom import read_slices
    from lstv.sample import read_sample
    from lstv.studies import read_series_table, sagittal_t2_tasks

    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    sample = read_sample(task, phantom_dataset.images_dir, 160)
    series = read_slices(task.series_source(phantom_dataset.images_dir))
    i = len(series.planes) // 2
    expected = descriptors(series.planes[i], series.pixel_spacings[i], series.positions, i)
    assert sample.acquisition == expected
    assert np.isfinite(list(expected.values())).all()
    assert expected["acq_slice_spacing_mm"] == pytest.approx(
        float(np.linalg.norm(series.positions[i + 1] - series.positions[i]))
    )
    neighbour = descriptors(series.planes[i + 1], series.pixel_spacings[i], series.positions, i)
    windowed = descriptors(sample.slice_pixels, series.pixel_spacings[i], series.positions, i)
    for other in (neighbour, windowed):
        assert other["acq_noise"] != expected["acq_noise"]


@pytest.mark.parametrize("parasagittal, windowed", [(0, 1), (1, 5), (2, 5), (3, 7)])
def test_a_reader_windows_only_the_slices_the_model_reads(
    monkeypatch, phantom_dataset, parasagittal, windowed
):
    """The centre alone becomes 8-bit when the model reads it alone (its neighbours would only
    choose the resize's path, lstv.inference.centre_input); with parasagittal slices, the
    window around it. The inputs are the whole volume's either way."""
    from lstv.dicom import OrderedSlices, read_series
    from lstv.inference import model_inputs, parasagittal_offsets
    from lstv.sample import read_sample
    from lstv.studies import read_series_table, sagittal_t2_tasks

    kept = []
    volume = OrderedSlices.volume

    def recorded(self, keep=slice(None)):
        kept.append(keep)
        return volume(self, keep)

    monkeypatch.setattr(OrderedSlices, "volume", recorded)
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    sample = read_sample(task, phantom_dataset.images_dir, 160, parasagittal)
    [keep] = kept
    assert keep.stop - keep.start == windowed
    assert keep.start <= sample.slice_index < keep.stop
    whole = read_series(task.series_source(phantom_dataset.images_dir)).volume
    offsets = parasagittal_offsets(len(whole), parasagittal)
    expected = model_inputs(whole, 160, (0, *offsets))
    assert np.array_equal(sample.image, expected[0])
    assert np.array_equal(sample.slice_pixels, whole[sample.slice_index])
    if offsets:
        assert np.array_equal(sample.side_images, expected[1:])
    else:
        assert sample.side_images is None
