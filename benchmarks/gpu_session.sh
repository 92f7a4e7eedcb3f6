#!/usr/bin/env bash
# One GPU session, as one command: the benchmark suite, the engine A/B, the engine tests.
# (benchmarks/big_batch.py, the 1,000,000-dataset W1 batch, ran in an earlier session.)
#
#   bash benchmarks/gpu_session.sh            (OUT defaults to benchmarks/out/gpu-session)
#
# Each step has its own time limit, so a slow step cannot starve the others; every
# step writes its files as it goes. The limits add up to 540 s: call the device with
# a 600 s limit. Peers missing on the GPU machine travel as wheels
# in .whl/ (see benchmarks/RESULTS.md for the pip lines that make them; flatbuffers, for
# tests/test_compile.py: pip download flatbuffers --no-deps -d .whl).
set -u
OUT=${OUT:-benchmarks/out/gpu-session}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
# At most 8 files come back from the GPU machine: keep $OUT small.
timeout "${SUITE_S:-150}" python3 -m benchmarks.run --suite gpu --out "$OUT/suite" --deadline 120 > "$OUT/suite.log" 2>&1
echo "suite exit $?"
timeout "${AB_S:-110}" python3 -m benchmarks.ab_engine --only W1,W2,W3 --out "$OUT/ab" > "$OUT/ab.log" 2>&1
echo "ab exit $?"; rm -f "$OUT/ab/ab.md"
# The fused kernel compiled for this GPU against the XLA loop (skipped without a GPU).
# (-o addopts=-ra: pyproject's -n needs pytest-xdist, which the GPU machine may lack.)
timeout "${FUSED_S:-60}" python3 -m pytest -o addopts=-ra -q -p no:cacheprovider tests/test_fused.py -k on_a_gpu > "$OUT/fused.log" 2>&1
echo "fused tests exit $?"
timeout "${TESTS_S:-220}" python3 -m pytest -o addopts=-ra -x -q -p no:cacheprovider tests/test_moments.py tests/test_batch.py \
  tests/test_status.py tests/test_paths.py tests/test_compile.py > "$OUT/tests.log" 2>&1
echo "tests exit $?"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
tail -n 25 "$OUT/suite/results.md" 2>/dev/null; cat "$OUT/ab.log"; tail -n 5 "$OUT/fused.log" "$OUT/tests.log"
