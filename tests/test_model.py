import numpy as np
import pytest
import timm
import torch

from helpers import SHA_B, normal_features
from lstv.errors import CheckpointError, CheckpointNotFoundError
from lstv.model import (
    KNOWN_ENCODERS,
    PointNet,
    extract_state_dict,
    load_checkpoint,
    save_checkpoint,
)


def test_resnet50d_state_dict_matches_the_real_checkpoint():
    sd = PointNet().state_dict()
    assert len(sd) == 395
    assert sum(v.numel() for v in sd.values() if v.is_floating_point()) == 32_595_526
    assert {
        "D",
        "mean",
        "std",
        "logit.weight",
        "decoder.block.0.conv1.0.weight",
        "decoder.block.4.conv2.1.running_var",
    } <= set(sd)
    assert sd["decoder.block.0.conv1.0.weight"].shape == (256, 2048 + 1024, 3, 3)
    assert sd["decoder.block.4.conv1.0.weight"].shape == (16, 32, 3, 3)  # no skip at the top
    assert sd["logit.weight"].shape == (6, 16, 1, 1)


def test_forward_shapes_and_softmax():
    model = PointNet("resnet10t").eval()
    x = torch.randint(0, 255, (2, 1, 160, 160), dtype=torch.uint8)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 6, 160, 160)
    p = torch.softmax(out, 1)
    assert torch.allclose(p.sum(1), torch.ones(2, 160, 160), atol=1e-5)


def test_non_resnet_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown encoder 'mobilenetv3_small_050'"):
        PointNet("mobilenetv3_small_050")


@pytest.mark.parametrize("layout", ["state_dict", "model_state_dict", "bare", "module"])
def test_checkpoint_layouts_load(tmp_path, layout):
    torch.manual_seed(1)
    model = PointNet("resnet10t")
    sd = model.state_dict()
    payload = {
        "state_dict": {"state_dict": sd, "iteration": 5},
        "model_state_dict": {"model_state_dict": sd},
        "bare": sd,
        "module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "c.pth"
    torch.save(payload, path)
    loaded, info = load_checkpoint(path, encoder="resnet10t")
    assert not loaded.training
    w = loaded.state_dict()["logit.weight"]
    assert torch.equal(w, sd["logit.weight"])
    assert len(info.sha256) == 64


def test_original_layout_defaults_to_resnet50d(original_layout_checkpoint):
    model, info = load_checkpoint(original_layout_checkpoint)
    assert model.encoder_name == "resnet50d"
    assert info.iteration == 2484 and info.epoch == 10
    assert info.config == {"encoder": "resnet50d", "image_size": 160}


def test_saved_checkpoint_carries_config_and_halves(tmp_path):
    torch.manual_seed(2)
    model = PointNet("resnet10t").eval()
    full = save_checkpoint(model, tmp_path / "full.pth", iteration=7, epoch=1)
    half = save_checkpoint(model, tmp_path / "half.pth", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, info = load_checkpoint(half)
    assert info.config["encoder"] == "resnet10t"
    x = torch.randint(0, 255, (1, 1, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        a, b = torch.softmax(model(x), 1), torch.softmax(loaded(x), 1)
    assert torch.allclose(a, b, atol=2e-3)
    assert load_checkpoint(full)[1].iteration == 7


def test_mismatched_keys_are_listed(tmp_path):
    sd = PointNet("resnet10t").state_dict()
    sd.pop("logit.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing: logit\.bias.*unexpected: extra\.weight"):
        load_checkpoint(tmp_path / "bad.pth", encoder="resnet10t")


def test_wrong_encoder_reports_shapes(tmp_path):
    torch.save({"state_dict": PointNet("resnet10t").state_dict()}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "c.pth")  # defaults to resnet50d


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="01b_download_model.sh"):
        load_checkpoint(tmp_path / "absent.pth")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"w": np.arange(3)}}, tmp_path / "evil.pth")  # not a tensor
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pth")


def test_non_dict_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        extract_state_dict(torch.load(tmp_path / "t.pth", weights_only=True))


def test_a_reference_embedded_in_a_checkpoint_travels_with_it(tmp_path):
    import torch

    from lstv.atomic import file_sha256
    from lstv.model import PointNet, embed_reference, read_checkpoint, save_checkpoint
    from lstv.score import fit_reference
    from lstv.scoring import load_reference

    torch.manual_seed(0)
    ckpt = save_checkpoint(PointNet("resnet10t"), tmp_path / "c.pth", iteration=0, epoch=0)
    raw = normal_features(np.random.default_rng(13), 20)
    ref_path = fit_reference(raw, file_sha256(ckpt)).save(tmp_path / "ref.json")
    out = embed_reference(ckpt, ref_path, tmp_path / "with_ref.pth")
    obj = read_checkpoint(out)
    assert obj["config"]["lstv_reference"]["n"] == 20
    before = read_checkpoint(ckpt)["state_dict"]
    for k, v in obj["state_dict"].items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])
    # lstv score --reference CHECKPOINT: the embedded reference, checked against that file
    embedded = load_reference(out)
    assert embedded.checkpoint_sha256 == file_sha256(out) and embedded.n == 20
    other = fit_reference(raw, SHA_B).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=SHA_B):
        embed_reference(ckpt, other, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="overwritten"):
        embed_reference(ckpt, ref_path, ckpt)


MODEL_PROBE = """
import sys
{first}
import numpy as np
import torch
from lstv.model import PointNet
torch.manual_seed(0)
lean = "torch._dynamo" not in sys.modules and "huggingface_hub" not in sys.modules
lean = lean and not any(n.startswith("torchvision") for n in sys.modules)
model = PointNet("resnet50d").eval()  # the real checkpoint's timm encoder
x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 1, 64, 64), dtype=np.uint8))
with torch.inference_mode():
    out = model(x)
import torchvision  # in full afterwards
assert torchvision.ops.nms is not None and torchvision.models.resnet18 is not None
import huggingface_hub  # and the hub
assert huggingface_hub.hf_hub_download is not None
print(lean, float(out.double().sum()), float(out.double().abs().max()))
"""


@pytest.mark.slow
def test_timm_imports_without_torchvision_and_dynamo_and_builds_the_same_model():
    """lstv.model imports timm without torchvision's package init, torch._dynamo (1.4 s of
    the start-up) and huggingface_hub (0.4-0.7 s); the model is the same as with a plain
    ``import timm`` first, and torchvision and huggingface_hub still import afterwards."""
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")

    def probe(first: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", MODEL_PROBE.format(first=first)], capture_output=True,
            text=True, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.split()

    lean = probe("")
    plain = probe("import torchvision, huggingface_hub, timm")
    assert lean[0] == "True" and plain[0] == "False"
    assert lean[1:] == plain[1:]


# -------------------- encoder allowlist
# Issue 9.9: a checkpoint's config may only name encoders timm builds offline.


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
