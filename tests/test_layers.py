"""The package's one layering rule, checked on the source: core never imports applications.

Core is what every caller shares (reading DICOM, the model, metrics, the run folder, the tables,
the plots); applications are the commands built on it. Imports inside functions count too: a
cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lstv"

CORE = {
    "levels", "rsna", "errors", "config", "intensity", "dicom", "studies", "index", "model",
    "inference", "sample", "uncertainty", "rundir", "results", "tables", "score", "columns",
    "plots", "visualize", "study_view", "score_check",
}  # fmt: skip
APPLICATIONS = {
    "pipeline", "report", "evaluate", "audit", "merge", "train", "web", "demo", "cli", "api",
    "slurm", "slurm_settings", "download", "phantom", "calibrate", "scoring",
}  # fmt: skip


def module_name(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported_lstv_modules(path: Path) -> set[str]:
    """Top-level ``lstv`` submodules that a file imports anywhere (module or function level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "lstv":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "lstv" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_has_a_layer():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert modules - CORE - APPLICATIONS == set(), "add new modules to CORE or APPLICATIONS"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_core_never_imports_an_application(path):
    if module_name(path) not in CORE:
        return
    wrong = imported_lstv_modules(path) & APPLICATIONS
    assert not wrong, f"{path.relative_to(PACKAGE)} (core) imports {sorted(wrong)}"


def test_evaluate_does_not_load_the_report():
    """``lstv evaluate`` draws one ROC: it used to import the whole report to do it."""
    assert "report" not in imported_lstv_modules(PACKAGE / "evaluate.py")


def test_no_module_is_over_800_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert not long


def test_the_score_is_maths_only():
    """``lstv.score`` (the score's maths, which issues 17 and 18 extend) stays numpy and the
    standard library: pandas, torch and the run folder's readers belong to its callers."""
    tree = ast.parse((PACKAGE / "score.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    third_party = {m.split(".")[0] for m in imported} - {"lstv", "__future__", "numpy"}
    assert not {"pandas", "torch", "timm", "cv2", "matplotlib"} & third_party
    allowed = {"lstv.levels", "lstv.columns", "lstv.rundir", "lstv.score_check"}
    assert {m for m in imported if m.startswith("lstv.")} <= allowed
