#!/usr/bin/env bash
# Mutation testing of the core modules whose numbers users trust (issue 20), with mutmut 3
# (pip install -r requirements-dev.txt) and the [tool.mutmut] settings in pyproject.toml.
#
#   tools/mutation.sh                  every listed module, then the score per module
#   tools/mutation.sh tables score     only these modules (names as in src/lstv/)
#   MUTATION_JOBS=4 tools/mutation.sh  more workers (default 2: the shared 2-core machine)
#
# Mutants and results live in mutants/ (ignored by git); a later run reuses what is unchanged.
# Equivalent survivors, one line each with the reason: tools/mutation_survivors.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(tables inference uncertainty audit score score_features score_reference score_reasons score_drift
     intensity studies dicom dicom_limits dicom_geometry rundir atomic csv_files)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=("${ALL[@]}")
# mutmut puts mutants/src first on sys.path; a PYTHONPATH to src/ would only add confusion.
unset PYTHONPATH
# One thread per worker process: the workers already use the cores.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for module in "${modules[@]}"; do
    pattern="lstv.${module}.*"
    # audit: only its merge of earlier reviews (keep_reviews); the rest is formatting.
    [ "$module" = audit ] && pattern="lstv.audit.x_keep_reviews__mutmut_*"
    log="mutants/run-${module}.log"
    mkdir -p mutants
    nice -n 19 mutmut run --max-children "${MUTATION_JOBS:-2}" "$pattern" >"$log" 2>&1 \
        || { tail -n 20 "$log"; exit 1; }
    tr '\r' '\n' <"$log" | grep -E "mutations/second|^ *[0-9]+/[0-9]+" | tail -n 2
done
python tools/mutation_score.py "${modules[@]}"
