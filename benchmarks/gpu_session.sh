#!/usr/bin/env bash
# One GPU session, as one command: the benchmark suite, the engine A/B (also with CUDA
# graphs), a batch of 1,000,000 W1 datasets, the engine tests.
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
timeout "${SUITE_S:-200}" python3 -m benchmarks.run --suite gpu --out "$OUT/suite" --deadline 150 > "$OUT/suite.log" 2>&1
echo "suite exit $?"
timeout "${AB_S:-120}" python3 -m benchmarks.ab_engine --only W1,W2,W3 --out "$OUT/ab" > "$OUT/ab.log" 2>&1
echo "ab exit $?"
# The same fits with XLA's while loops recorded as CUDA graphs (no host round trip per
# iteration): an XLA flag a user can set, not something gmmjax sets.
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL" \
  timeout "${AB_CB_S:-70}" python3 -m benchmarks.ab_engine --only W1,W2 --variants "compact:16:4;compact:8:8" \
  --out "$OUT/ab-cuda-graphs" > "$OUT/ab-cuda-graphs.log" 2>&1
echo "ab (cuda graphs) exit $?"
timeout "${BIG_S:-80}" python3 -m benchmarks.big_batch --B 1000000 --json "$OUT/big_batch.json" > "$OUT/big_batch.log" 2>&1
echo "big batch exit $?"
timeout "${TESTS_S:-90}" python3 -m pytest -x -q -p no:cacheprovider tests/test_moments.py tests/test_batch.py > "$OUT/tests.log" 2>&1
echo "tests exit $?"
cat "$OUT/gpu.txt"; tail -n 25 "$OUT/suite/results.md" 2>/dev/null; cat "$OUT/ab.log" "$OUT/ab-cuda-graphs.log"; tail -n 20 "$OUT/big_batch.log"; tail -n 5 "$OUT/tests.log"
