"""Prints max |vlx - reference| for every output of the All-in-one fixtures, with pass/fail at the
fixture README tolerances (vlx/models/allinone/load_fixture.py TOLERANCES).

python benchmarks/allinone_parity_report.py [FIXTURE_DIR ...]
  (default ../shared/reference/allinone/tiny and .../tiny/distilled)
String outputs (gradient name lists) are compared for equality ('same' / 'DIFF').
"""
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import vlx  # noqa: E402,F401
from vlx.convert.parity import tolerance  # noqa: E402
from vlx.models.allinone.load_fixture import TOLERANCES, compute_fixture_outputs  # noqa: E402


def report(fixture_dir: str) -> bool:
  start = time.time()
  with jax.default_matmul_precision("highest"):
    ours = compute_fixture_outputs(fixture_dir)
  ref = np.load(pathlib.Path(fixture_dir) / "outputs.npz")
  print(f"\n{fixture_dir} ({time.time() - start:.1f} s)")
  print(f"{'output':38s} {'shape':>16s} {'max abs err':>11s} {'max |ref|':>10s}  result")
  ok_all = True
  for key in ref.files:
    want = ref[key]
    if key not in ours:
      print(f"{key:38s} {str(want.shape):>16s} {'-':>11s} {'-':>10s}  MISSING")
      ok_all = False
      continue
    got = np.asarray(ours[key])
    if want.dtype.kind in "US":
      ok = got.shape == want.shape and bool(np.all(got == want))
      print(f"{key:38s} {str(want.shape):>16s} {'-':>11s} {'-':>10s}  {'same' if ok else 'DIFF'}")
      ok_all &= ok
      continue
    if got.shape != want.shape:
      print(f"{key:38s} {str(want.shape):>16s} shape {got.shape}  FAIL")
      ok_all = False
      continue
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    err = float(diff.max()) if diff.size else 0.0
    atol, rtol = tolerance(key, TOLERANCES)
    ok = bool(np.all(diff <= atol + rtol * np.abs(want.astype(np.float64))))
    big = float(np.max(np.abs(want))) if want.size else 0.0
    print(f"{key:38s} {str(want.shape):>16s} {err:11.2e} {big:10.3e}  {'ok' if ok else 'FAIL'}")
    ok_all &= ok
  print(f"{'all' if ok_all else 'NOT all'} {len(ref.files)} outputs within tolerance")
  return ok_all


if __name__ == "__main__":
  base = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/allinone/tiny"
  dirs = sys.argv[1:] or [str(base), str(base / "distilled")]
  sys.exit(0 if all([report(d) for d in dirs]) else 1)
