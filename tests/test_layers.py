"""The package's shape, checked on the source: core never imports applications, no import
circle, no module over 600 lines, no private name imported from another module, and no
``__init__.py`` with logic beyond re-exports.

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
    "plots", "visualize", "study_view", "score_check", "score_features", "score_reference",
    "score_reasons", "score_drift", "dicom_geometry", "dicom_limits", "atomic", "csv_files",
    "acquisition",
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


SCORE_MATHS = [
    "score", "score_features", "score_reference", "score_reasons", "score_drift", "acquisition"
]


@pytest.mark.parametrize("name", SCORE_MATHS)
def test_the_score_is_maths_only(name):
    """The score's maths (``lstv.score`` and its modules, which issues 17 and 18 extend) stays
    numpy and the standard library: pandas, torch and the run folder's readers belong to its
    callers."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    third_party = {m.split(".")[0] for m in imported} - {"lstv", "__future__", "numpy"}
    assert not {"pandas", "torch", "timm", "cv2", "matplotlib"} & third_party
    allowed = {"lstv.levels", "lstv.columns", "lstv.errors", "lstv.rundir", "lstv.atomic"}
    allowed |= {"lstv.score_check", "lstv.config"}
    allowed |= {f"lstv.{m}" for m in SCORE_MATHS}
    assert {m for m in imported if m.startswith("lstv.")} <= allowed


# --------------------------------------------------------------------------- shape of the package

MAX_LINES = 600
# Known exceptions, each owned by an open issue: remove a name as soon as its file obeys, so that
# the rule then holds for it too (the test below fails on a stale name).
INIT_WITH_LOGIC: set[str] = set()  # web/ and report/ moved theirs to modules (issue 19)


def module_of(path: Path) -> str:
    """``phantom/anatomy.py`` -> ``phantom.anatomy``; a package's ``__init__.py`` -> its name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the lstv modules it imports anywhere in the file (relative imports resolved)."""
    paths = {module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                elif node.module and node.module.split(".")[0] == "lstv":
                    module = node.module.partition(".")[2]
                else:
                    continue
                for alias in node.names:
                    sub = f"{module}.{alias.name}".strip(".")
                    targets.add(sub if sub in paths else module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("lstv."):
                        targets.add(alias.name.partition(".")[2])
        # ``from lstv import __version__`` is a constant, not an edge to the notebook API that
        # the root package loads lazily (its __getattr__).
        graph[name] = {t for t in targets if t in paths and t not in (name, "")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    """No two modules import each other, directly or round a longer circle, even inside a
    function: a circle means neither can be understood or tested without the other."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by idea: {long}"


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore belongs to its module: another module that needs it
    needs a public name (or the code moves)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lstv"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private = [name for name in private if name != "__version__"]
                if private:
                    found.append(f"{path.relative_to(PACKAGE)}: {private} from {node.module}")
    assert found == []


def init_logic(path: Path) -> list[str]:
    """What an ``__init__.py`` holds beyond a docstring, imports, ``__all__`` and names bound to
    other names (re-exports): each function, class or computed value, by line."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
            node.value, ast.Name | ast.Attribute | ast.Constant | ast.Tuple | ast.List
        ):
            continue  # __all__, a version, a re-exported name
        if isinstance(node, ast.FunctionDef) and node.name in ("__getattr__", "__dir__"):
            continue  # names re-exported lazily (the root's notebook API: --help stays quick)
        found.append(f"line {node.lineno}: {type(node).__name__}")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p))
def test_no_init_holds_logic(path):
    name = str(path.relative_to(PACKAGE))
    if name in INIT_WITH_LOGIC:
        assert init_logic(path), f"{name} is re-exports only now: drop it from INIT_WITH_LOGIC"
        return
    assert not init_logic(path), f"{name} holds logic: move it to a module of its own"


def test_every_module_has_its_test_module():
    """tests/ mirrors the package: tests/test_<module>.py for each top-level module or package."""
    tests = PACKAGE.parents[1] / "tests"
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    missing = {m for m in modules if not (tests / f"test_{m}.py").is_file()}
    assert missing == set(), f"add tests/test_<module>.py for {missing}"
