"""The mutation score per module from mutmut's results in mutants/ (tools/mutation.sh).

Score = killed / (killed + survived + no tests). A timeout counts as killed, as in mutmut, but
is shown apart: on a loaded machine a slow start can look like one. "w/o equiv." leaves out of
the denominator the survivors listed in tools/mutation_survivors.txt (equivalent mutants, each
with its reason). Any other survivor is printed, since a test should kill it.

    python tools/mutation_score.py [MODULE ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants" / "src" / "lstv"
SURVIVORS = ROOT / "tools" / "mutation_survivors.txt"
MODULES = (
    "tables",
    "inference",
    "uncertainty",
    "audit",
    "score",
    "score_features",
    "score_reference",
    "score_reasons",
    "score_drift",
    "intensity",
    "studies",
    "dicom",
    "dicom_limits",
    "dicom_geometry",
    "rundir",
    "atomic",
    "csv_files",
)
# Only audit's merge of earlier reviews is in scope; the rest of audit.py is formatting.
IN_SCOPE = {"audit": "lstv.audit.x_keep_reviews__mutmut_"}
KILLED = {1, 3, 37, -11, -9}  # a test failed, pytest broke, the type check, a crash
TIMEOUT = {36, -24, 24, 152, 255}  # stopped at the time limit: counted as killed, shown apart


def equivalent() -> dict[str, str]:
    """Mutant name -> why it is equivalent, from the survivors list."""
    out = {}
    for line in SURVIVORS.read_text().splitlines() if SURVIVORS.is_file() else []:
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            out[name] = reason.strip()
    return out


def module_results(module: str) -> dict[str, int | None]:
    meta = MUTANTS / f"{module}.py.meta"
    if not meta.is_file():
        return {}
    results = json.loads(meta.read_text())["exit_code_by_key"]
    prefix = IN_SCOPE.get(module, f"lstv.{module}.")
    return {name: code for name, code in results.items() if name.startswith(prefix)}


def main(modules: list[str]) -> int:
    explained = equivalent()
    print(
        f"{'module':<12} {'mutants':>7} {'checked':>7} {'killed':>6} {'equiv.':>6} "
        f"{'timeout':>7} {'survived':>8} {'no test':>7} {'score':>6} {'w/o equiv.':>10}"
    )
    unexplained = []
    for module in modules or MODULES:
        results = module_results(module)
        checked = {n: c for n, c in results.items() if c is not None}
        timeouts = sum(c in TIMEOUT for c in checked.values())
        killed = sum(c in KILLED for c in checked.values()) + timeouts
        survivors = [n for n, c in checked.items() if c == 0]
        no_tests = [n for n, c in checked.items() if c in (5, 33)]
        equiv = [n for n in survivors if n in explained]
        unexplained += [n for n in survivors + no_tests if n not in explained]
        scored = killed + len(survivors) + len(no_tests)
        score = f"{100 * killed / scored:5.1f}%" if scored else "-"
        real = scored - len(equiv)
        adjusted = f"{100 * killed / real:5.1f}%" if real else "-"
        print(
            f"{module:<12} {len(results):>7} {len(checked):>7} {killed:>6} {len(equiv):>6} "
            f"{timeouts:>7} {len(survivors) - len(equiv):>8} {len(no_tests):>7} {score:>6} "
            f"{adjusted:>10}"
        )
    if unexplained:
        print(f"\n{len(unexplained)} survivors not in {SURVIVORS.name} (mutmut show NAME):")
        print("\n".join(f"  {n}" for n in sorted(unexplained)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
