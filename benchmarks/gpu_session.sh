#!/usr/bin/env bash
# One GPU session, as one command: the benchmark suite, the engine A/B, the engine tests.
#
#   bash benchmarks/gpu_session.sh            (OUT defaults to benchmarks/out/gpu-session)
#
# Each step has its own time limit, so a slow step cannot starve the others; every
# step writes its files as it goes. Peers missing on the GPU machine travel as wheels
# in .whl/ (see benchmarks/RESULTS.md for the pip lines that make them).
set -u
OUT=${OUT:-benchmarks/out/gpu-session}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/gpu.txt" 2>&1
timeout "${SUITE_S:-270}" python3 -m benchmarks.run --suite gpu --out "$OUT/suite" --deadline 180 > "$OUT/suite.log" 2>&1
echo "suite exit $?"
timeout "${AB_S:-120}" python3 -m benchmarks.ab_engine --only W1,W3 --out "$OUT" > "$OUT/ab.log" 2>&1
echo "ab exit $?"; rm -f "$OUT/ab.json"
timeout "${TESTS_S:-90}" python3 -m pytest -x -q -p no:cacheprovider tests/test_sklearn_match.py tests/test_batch.py > "$OUT/tests.log" 2>&1
echo "tests exit $?"
cat "$OUT/gpu.txt"; tail -n 25 "$OUT/suite/results.md" 2>/dev/null; cat "$OUT/ab.log"; tail -n 5 "$OUT/tests.log"
