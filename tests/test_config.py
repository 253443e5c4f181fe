"""Every command's settings (lstv.config): defaults once, bad settings refused by flag name."""

import dataclasses
import math

import pytest

from lstv.config import (
    COMMAND_CONFIGS,
    DemoConfig,
    InferenceConfig,
    ThresholdOverrides,
    TrainConfig,
    default,
)
from lstv.errors import UsageError


def test_every_command_has_settings_and_every_setting_a_type():
    assert set(COMMAND_CONFIGS) >= {"index", "infer", "report", "evaluate", "calibrate", "score"}
    for config in COMMAND_CONFIGS.values():
        for f in dataclasses.fields(config):
            assert f.type, (config.__name__, f.name)


def test_defaults_are_read_from_the_dataclass():
    assert default(InferenceConfig, "mode") == "trial"
    assert default(InferenceConfig, "threshold_overrides") == ThresholdOverrides()
    with pytest.raises(KeyError):
        default(InferenceConfig, "input_dir")  # required: no default


@pytest.mark.parametrize(
    ("config", "settings", "flag"),
    [
        (InferenceConfig, {"mode": "fast"}, "--mode"),
        (InferenceConfig, {"batch_size": 0}, "--batch_size"),
        (InferenceConfig, {"num_parts": 2, "part_id": 2}, "--part_id"),
        (InferenceConfig, {"parasagittal": -1}, "--parasagittal"),
        (InferenceConfig, {"parasagittal": 11}, "--parasagittal"),
        (TrainConfig, {"device": "tpu"}, "--device"),
        (DemoConfig, {"n_studies": 0}, "--n_studies"),
    ],
)
def test_bad_settings_are_the_user_s_mistake_and_name_the_flag(config, settings, flag):
    required = {
        f.name: "x"
        for f in dataclasses.fields(config)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    with pytest.raises(UsageError, match=flag):
        config(**required, **settings)


def test_threshold_overrides_refuse_non_finite_values_and_list_what_was_given():
    assert ThresholdOverrides(flag_entropy=4.5).given() == {"flag_entropy": 4.5}
    with pytest.raises(UsageError, match="finite"):
        ThresholdOverrides(high_entropy=math.nan)
    config = InferenceConfig("in", "s.csv", "out", threshold_overrides={"flag_entropy": 4.0})
    assert config.threshold_overrides == ThresholdOverrides(flag_entropy=4.0)
