#!/usr/bin/env bash
# MFU, step time and memory of ALPRO base and All-in-one-B on a GPU/TPU host (issue 17 part 4).
#
#   bash benchmarks/accelerator_report.sh            # from the repository root
#
# For every config and remat setting (off, on) it runs benchmarks/step_time.py in the compute dtype
# (bf16) at the batch sizes in BATCHES, largest first, until one fits (an out-of-memory run or one
# past RUN_TIMEOUT is recorded and the next size tried). Each run is its own process (a clean
# device after an OOM) and appends one JSON line to $OUT/accelerator_report.jsonl: step_time.py's
# report (step_s, step_s_spread, compile_s, flops, flops_per_s, peak_flops, mfu, peak_mb of XLA's
# memory analysis, device_peak_mb of the allocator, remat, ...) or {"error": "oom"|"timeout"|...}.
# stderr of each run goes to $OUT/logs/. Then a summary table is printed.
#
# Settings (environment): OUT (./accelerator_report), CONFIGS (space-separated config specs),
# BATCHES (descending), REMATS ("off on"), DTYPE (bfloat16), STEPS (5), RUN_TIMEOUT (seconds per
# run, 1200), PYTHON (python), EXTRA (more step_time.py flags, e.g. "--set model.pem=False"),
# MATMUL_PEAK (1: also measure the bf16/fp32 matmul rate of the device into $OUT/matmul_peak.json,
# with MATMUL_N-sided matrices, 8192).
# A CPU smoke test in seconds:
#   OUT=/tmp/r CONFIGS=configs/alpro_pretrain.py:tiny BATCHES="2" MATMUL_PEAK=0 \
#     bash benchmarks/accelerator_report.sh
set -u -o pipefail

OUT=${OUT:-./accelerator_report}
CONFIGS=${CONFIGS:-"configs/alpro_pretrain.py configs/allinone_pretrain.py:B"}
BATCHES=${BATCHES:-"256 192 128 96 64 48 32 24 16 12 8 4 2 1"}
REMATS=${REMATS:-"off on"}
DTYPE=${DTYPE:-bfloat16}
STEPS=${STEPS:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-1200}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}
MATMUL_PEAK=${MATMUL_PEAK:-1}
MATMUL_N=${MATMUL_N:-8192}

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT/logs" || exit 2
REPORT="$OUT/accelerator_report.jsonl"
echo "writing $REPORT" >&2

if [[ "$MATMUL_PEAK" == 1 ]]; then
  timeout "$RUN_TIMEOUT" "$PYTHON" benchmarks/matmul_peak.py --n "$MATMUL_N" --dtype bfloat16 \
      --dtype float32 --out "$OUT/matmul_peak.json" >/dev/null 2>"$OUT/logs/matmul_peak.err" \
    || echo "matmul_peak.py failed (see $OUT/logs/matmul_peak.err)" >&2
fi

# One JSON line for a run that gave no report: {"config", "batch_size", "remat", "dtype", "error",
# "rc"}.
error_line() {
  "$PYTHON" -c 'import json, sys
c, b, r, d, e, rc = sys.argv[1:]
print(json.dumps(dict(config=c, batch_size=int(b), remat=r == "on", dtype=d, error=e,
                      rc=int(rc))))' "$@"
}

for config in $CONFIGS; do
  for remat in $REMATS; do
    flag=""
    [[ "$remat" == on ]] && flag="--remat"
    for bs in $BATCHES; do
      name="$(echo "$config" | tr '/:' '__')_remat-${remat}_b${bs}"
      echo "== $config remat=$remat batch=$bs" >&2
      # shellcheck disable=SC2086 (EXTRA and flag are word lists)
      line=$(timeout "$RUN_TIMEOUT" "$PYTHON" benchmarks/step_time.py --config "$config" \
               --batch_size "$bs" --steps "$STEPS" --dtype "$DTYPE" $flag $EXTRA \
               2>"$OUT/logs/$name.err" | tail -n 1)
      rc=$?
      if [[ $rc -eq 0 && "$line" == "{"* ]]; then
        echo "$line" >> "$REPORT"
        break   # the largest size that fits
      fi
      if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        why=timeout
      elif grep -qiE "RESOURCE_EXHAUSTED|out of memory|OOM|Allocator .* ran out" \
             "$OUT/logs/$name.err"; then
        why=oom
      else
        why=failed
      fi
      echo "   $why (rc $rc; $OUT/logs/$name.err)" >&2
      error_line "$config" "$bs" "$remat" "$DTYPE" "$why" "$rc" >> "$REPORT"
    done
  done
done

"$PYTHON" - "$REPORT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'config':44} {'remat':5} {'batch':>5} {'step_s':>8} {'TFLOP/s':>8} {'mfu':>6} "
      f"{'xla_peak_GB':>11} {'dev_peak_GB':>11} note")
for r in rows:
  def gb(key):
    return f"{r[key] / 1024:.1f}" if r.get(key) is not None else "-"
  tf = f"{r['flops_per_s'] / 1e12:.1f}" if r.get("flops_per_s") else "-"
  mfu = f"{r['mfu']:.3f}" if r.get("mfu") is not None else "-"
  print(f"{r['config']:44} {str(r['remat']):5} {r['batch_size']:>5} "
        f"{r.get('step_s', '-')!s:>8} {tf:>8} {mfu:>6} {gb('peak_mb'):>11} "
        f"{gb('device_peak_mb'):>11} {r.get('error', r.get('peak_source', ''))}")
EOF
