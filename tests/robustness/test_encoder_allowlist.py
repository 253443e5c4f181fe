"""Issue 9.9: a checkpoint's config may only name encoders timm builds offline."""

import pytest
import timm
import torch

from lstv.errors import CheckpointError
from lstv.model import KNOWN_ENCODERS, PointNet, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return PointNet("resnet10t")


@pytest.fixture()
def no_timm_build(monkeypatch):
    """Fail the test if anything asks timm to build a model."""

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"timm.create_model({name!r}) was called")

    monkeypatch.setattr(timm, "create_model", refuse)


@pytest.mark.parametrize(
    "encoder",
    ["hf-hub:timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k", "vit_base_patch16_224", 7, None],
)
def test_unknown_encoder_is_refused_before_timm_builds(tiny_model, tmp_path, encoder, request):
    path = save_checkpoint(tiny_model, tmp_path / "c.pth", extra_config={"encoder": encoder})
    request.getfixturevalue("no_timm_build")
    with pytest.raises(CheckpointError, match="unknown encoder") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert "resnet50d" in str(err.value)  # the message lists what is allowed


@pytest.mark.parametrize(
    "config, message",
    [
        ({"image_size": "160"}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"risk_thresholds": {"flag_entropy": float("nan")}}, "risk_thresholds"),
        ({"risk_thresholds": {"medium_entropy": 9.0, "high_entropy": 1.0}}, "risk_thresholds"),
        ({"risk_thresholds": [1, 2]}, "risk_thresholds"),
    ],
)
def test_bad_config_names_the_file(tiny_model, tmp_path, config, message):
    path = save_checkpoint(tiny_model, tmp_path / "c.pth", extra_config=config)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_cli_gives_a_clear_error(tiny_model, tmp_path, phantom_dataset, capsys):
    from lstv.cli import main

    path = save_checkpoint(tiny_model, tmp_path / "c.pth", extra_config={"encoder": "hf-hub:x/y"})
    code = main(
        [
            "infer",
            "--input_dir", str(phantom_dataset.images_dir),
            "--series_csv", str(phantom_dataset.series_csv),
            "--output_dir", str(tmp_path / "out"),
            "--checkpoint", str(path),
            "--valid_ids", str(phantom_dataset.valid_ids_path),
            "--num_workers", "0",
            "--device", "cpu",
            "--quiet",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown encoder 'hf-hub:x/y'" in err and str(path) in err
    assert "Traceback" not in err


def test_every_known_encoder_builds_offline():
    for name in ("resnet10t", "resnet18d", "resnet34d"):
        assert name in KNOWN_ENCODERS
        assert PointNet(name).encoder_name == name
    with pytest.raises(ValueError, match="unknown encoder"):
        PointNet("hf-hub:timm/resnet18.a1_in1k")
