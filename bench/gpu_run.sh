#!/usr/bin/env bash
# One lease of a GPU machine, prepared here and run there once: install what its image lacks from the carried wheels
# (the device has no package registry), then the GPU tests, the benchmark and the batch job. Everything lands in $OUT.
# Carried: .gpu/p1 .. .gpu/pN hold the pieces of one tar of wheels (split to fit the tool's 64 MiB per call); a piece
# may arrive in an earlier call of the same lease, kept in /tmp/stash.   docs/gpu.md says how it was used.
# PYTEST_K picks the GPU tests (default: all but deepspeed); SKIP_BENCH=1 stops after them.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/stash /tmp/whl
for part in .gpu/p*/part.*; do [ -f "$part" ] && cp "$part" /tmp/stash/; done
ls -la /tmp/stash > "$OUT/stash.txt"
if [ "${1:-run}" = stash ]; then echo "stashed: $(ls /tmp/stash | tr '\n' ' ')"; exit 0; fi
cat /tmp/stash/part.* | tar -x -C /tmp/whl || { echo "the carried pieces do not make a whole tar"; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/whl/*.whl .gpu/p*/inferrelay-*.whl \
  || exit 4
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 INFERRELAY_TEST_HOME=/tmp/irhome
{ nvidia-smi; python3 -c "import sys, torch, transformers, onnxruntime; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); \
print('transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"; \
} > "$OUT/env.txt" 2>&1
python3 -m inferrelay.cli engines > "$OUT/engines.txt" 2>&1
cat "$OUT/env.txt" "$OUT/engines.txt"
T="timeout -k 5"
$T 270 python3 -m pytest tests/gpu -v -s -p no:cacheprovider -k "${PYTEST_K:-not deepspeed}" -o addopts="" 2>&1 | tee "$OUT/tests.log" | grep -E "PASS|FAIL|SKIP|ERROR|passed|failed|x-inferrelay|cuda|cap"
[ -n "${SKIP_BENCH:-}" ] && { echo done; exit 0; }
$T 150 python3 bench/gpu.py --out "$OUT/bench.json" --engines torch,deepspeed --only generation > "$OUT/bench.log" 2>&1; tail -c 1500 "$OUT/bench.log"
$T 150 python3 -m pytest tests/gpu -v -s -p no:cacheprovider -k deepspeed -o addopts="" > "$OUT/deepspeed.log" 2>&1
grep -E "PASS|FAIL|SKIP|ERROR|passed|failed|on cuda|Error" "$OUT/deepspeed.log" | tail -15
echo done
