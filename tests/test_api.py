import numpy as np
import pytest

import lstv
from lstv.studies import read_series_table, sagittal_t2_tasks


def test_notebook_api_one_call_each(phantom_dataset, tiny_checkpoint):
    task = sagittal_t2_tasks(read_series_table(phantom_dataset.series_csv))[0]
    series = lstv.read_series(task.series_dir(phantom_dataset.images_dir))
    predictor = lstv.load_model(tiny_checkpoint, device="cpu")
    metrics = lstv.analyse_volume(predictor, series.volume)
    assert set(metrics) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1", "probs"}
    assert metrics["probs"].shape == (6, 160, 160)
    assert 0 < metrics["l5_s1"]["entropy"] <= np.log(160 * 160) + 1e-9
    assert predictor.info.config["encoder"] == "resnet10t"
    with pytest.raises(TypeError, match="uint8"):
        lstv.analyse_volume(predictor, series.volume.astype(np.float32))
