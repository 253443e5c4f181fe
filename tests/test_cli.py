import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lstv.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_is_instant_and_does_not_import_torch():
    code = (
        "import sys, time; t=time.perf_counter(); from lstv.cli import build_parser; "
        "build_parser().format_help(); print(time.perf_counter()-t, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lstv", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0


def test_missing_checkpoint_exits_2_with_instructions(tmp_path, phantom_dataset, capsys):
    code = main(
        [
            "infer",
            "--input_dir",
            str(phantom_dataset.images_dir),
            "--series_csv",
            str(phantom_dataset.series_csv),
            "--output_dir",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tmp_path / "absent.pth"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint not found" in err and "01b_download_model.sh" in err
    assert not (tmp_path / "o" / "lstv_uncertainty_metrics.csv").exists()


def test_missing_input_dir_and_malformed_csv_fail_at_once(tmp_path, tiny_checkpoint, capsys):
    bad_csv = tmp_path / "s.csv"
    bad_csv.write_text("study,series\n1,2\n")
    (tmp_path / "images").mkdir()
    common = ["--output_dir", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint), "--quiet"]
    assert (
        main(
            ["infer", "--input_dir", str(tmp_path / "nope"), "--series_csv", str(bad_csv), *common]
        )
        == 2
    )
    assert "--input_dir not found" in capsys.readouterr().err
    assert (
        main(
            [
                "infer",
                "--input_dir",
                str(tmp_path / "images"),
                "--series_csv",
                str(bad_csv),
                *common,
            ]
        )
        == 2
    )
    assert "missing column(s) study_id, series_id" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_command_runs_a_trial(tmp_path, phantom_dataset, tiny_checkpoint):
    out = tmp_path / "trial"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "src" / "inference.py"),
            "--input_dir",
            str(phantom_dataset.images_dir),
            "--series_csv",
            str(phantom_dataset.series_csv),
            "--output_dir",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            "--valid_ids",
            str(phantom_dataset.valid_ids_path),
            "--mode",
            "trial",
            "--n_trial",
            "2",
            "--device",
            "cpu",
            "--num_workers",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 studies done" in proc.stdout
    assert len((out / "lstv_uncertainty_metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_seed_command_records_the_infer_command_it_ran(tmp_path, phantom_dataset, tiny_checkpoint):
    """Regression (issue 8): a run started as ``python src/inference.py`` was recorded as
    ``lstv --input_dir ...``, without ``infer``, because sys.argv was read instead of argv."""
    out = tmp_path / "trial"
    flags = [
        "--input_dir", str(phantom_dataset.images_dir),
        "--series_csv", str(phantom_dataset.series_csv),
        "--output_dir", str(out),
        "--checkpoint", str(tiny_checkpoint),
        "--valid_ids", str(phantom_dataset.valid_ids_path),
        "--n_trial", "1", "--device", "cpu", "--num_workers", "0", "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / "inference.py"), *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["command"] == shlex.join(["lstv", "infer", *flags])


def test_cli_defaults_come_from_the_config_dataclasses():
    """One source of defaults: the flags of infer, train, demo and serve read them."""
    from lstv.cli import build_parser
    from lstv.config import DemoConfig, InferenceConfig, ServeConfig, TrainConfig

    sub = build_parser()._subparsers._group_actions[0].choices
    for command, config in (
        ("infer", InferenceConfig),
        ("train", TrainConfig),
        ("demo", DemoConfig),
        ("serve", ServeConfig),
    ):
        for action in sub[command]._actions:
            field = config.__dataclass_fields__.get(action.dest)
            if field is None or action.required:
                continue
            assert action.default == field.default, (command, action.dest)


def test_every_command_s_flags_come_from_its_config_class():
    """One home for settings: each command's flags are its config's fields (lstv.config), and
    cli.py holds no default of its own."""
    import ast
    import dataclasses

    from lstv.cli import COMMANDS, PACKAGE_DIR, build_parser
    from lstv.config import COMMAND_CONFIGS

    assert set(COMMANDS) == set(COMMAND_CONFIGS)
    sub = build_parser()._subparsers._group_actions[0].choices
    for command, config in COMMAND_CONFIGS.items():
        fields = {}
        for f in dataclasses.fields(config):
            if f.type == "ThresholdOverrides":
                fields |= {g.name: g for g in dataclasses.fields(config_of_thresholds())}
            elif f.metadata.get("cli", True):
                fields[f.name] = f
        dests = {a.dest for a in sub[command]._actions} - {"help", "quiet", "verbose"}
        assert dests == set(fields), command
        for a in sub[command]._actions:
            f = fields.get(a.dest)
            if f is None:
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            assert a.required == required, (command, a.dest)
            if not required and not a.required:
                assert a.default == f.default or a.const is True, (command, a.dest)
    tree = ast.parse((PACKAGE_DIR / "cli.py").read_text())
    literal_defaults = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword)
        and node.arg == "default"
        and isinstance(node.value, ast.Constant)
    ]
    assert not literal_defaults, f"cli.py sets defaults itself at lines {literal_defaults}"


def config_of_thresholds():
    from lstv.config import ThresholdOverrides

    return ThresholdOverrides


def test_a_bug_exits_1_with_its_traceback_and_a_user_mistake_exits_2(
    tmp_path, monkeypatch, capsys, caplog
):
    import numpy as np

    import lstv.scoring
    from lstv.cli import main
    from lstv.errors import UsageError

    args = ["score", "--csv", str(tmp_path / "m.csv"), "--reference", str(tmp_path / "r.json")]

    def broken(*_):
        return np.zeros(2) + np.zeros(3)  # numpy's ValueError: a bug, not the user's input

    monkeypatch.setattr(lstv.scoring, "rescore_run", broken)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "internal error (ValueError" in err and "bug in lstv" in err
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError]  # traceback

    def refused(*_):
        raise UsageError("--reference x is not a reference")

    monkeypatch.setattr(lstv.scoring, "rescore_run", refused)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --reference x is not a reference"
    monkeypatch.undo()
    # a check of lstv's own that still raises a plain ValueError is the user's mistake too
    (tmp_path / "m.csv").write_text("study_id\n1\n")
    assert main(args) == 2
