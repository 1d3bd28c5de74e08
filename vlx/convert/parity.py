"""`python -m vlx.convert.parity --family F --fixture DIR --out OUT.npz [--compare REF.npz]`.

Runs a reference fixture (e.g. ../shared/reference/alpro/tiny, or any directory of the same format)
through vlx and writes every output under the fixture's key names. The family provides
`compute_fixture_outputs(fixture_dir) -> {name: np.ndarray}` in `vlx.models.<family>.parity` or,
failing that, `vlx.models.<family>.load_fixture`; it may also define `TOLERANCES` (see below).
Everything runs under `jax.default_matmul_precision('highest')` (CPU/GPU/TPU give float32 matmuls).

`--compare REF.npz` prints, per key, the max abs error and pass/fail at the fixture README
tolerances, and exits 1 if any key fails (missing keys and shape mismatches fail too).
User errors (unknown family, missing fixture or reference file) print one line
`python -m vlx.convert.parity: error: ...` and exit 2 (vlx/cli.py).
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlx import cli

# (key regex, atol, rtol): first match wins; atol = rtol = 0 means exact equality. These are the
# ALPRO fixture README values (labels/masks/metrics exact, gradients rtol 1e-3, forward 1e-4).
DEFAULT_TOLERANCES: tuple[tuple[str, float, float], ...] = (
    (r"vtm_labels|pem_ignore_masks.*|ret_metric/.*", 0.0, 0.0),
    (r"grad.*", 1e-6, 1e-3),
    (r".*", 1e-4, 1e-4),
)
FAMILY_MODULES = ("parity", "load_fixture")


class ParityError(cli.UserError):
  """The family or fixture cannot be run (printed as one line by the CLI)."""


def family_runner(family: str) -> tuple[Callable[[str], Mapping[str, Any]], Any]:
  """(compute_fixture_outputs, its module) of `vlx.models.<family>`."""
  tried = []
  for name in FAMILY_MODULES:
    module_name = f"vlx.models.{family}.{name}"
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if e.name and module_name.startswith(e.name):  # the module itself (or family) is absent
        tried.append(module_name)
        continue
      raise
    fn = getattr(module, "compute_fixture_outputs", None)
    if fn is not None:
      return fn, module
    tried.append(f"{module_name} (no compute_fixture_outputs)")
  raise ParityError(f"family {family!r} has no fixture runner: tried {', '.join(tried)}")


def tolerance(key: str, table: Sequence[tuple[str, float, float]] = DEFAULT_TOLERANCES
              ) -> tuple[float, float]:
  for pattern, atol, rtol in table:
    if re.fullmatch(pattern, key):
      return atol, rtol
  return 0.0, 0.0


def compare(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
            table: Sequence[tuple[str, float, float]] = DEFAULT_TOLERANCES
            ) -> tuple[list[dict[str, Any]], bool]:
  """One row per reference key (+ keys only in `ours`, informational); ok = every row passes."""
  rows, ok = [], True
  for key in ref:
    want = np.asarray(ref[key])
    atol, rtol = tolerance(key, table)
    row = dict(key=key, shape=tuple(want.shape), atol=atol, rtol=rtol, err=float("nan"))
    if key not in ours:
      row.update(status="MISSING")
    else:
      got = np.asarray(ours[key])
      if got.shape != want.shape:
        row.update(status=f"SHAPE {tuple(got.shape)}")
      elif want.dtype.kind in "USO" or got.dtype.kind in "USO":  # names (e.g. grad_*_names)
        row.update(status="ok" if np.array_equal(got.astype(str), want.astype(str)) else "FAIL")
      else:
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        row["err"] = float(diff.max()) if diff.size else 0.0
        good = (np.array_equal(got, want) if atol == rtol == 0.0 else
                bool(np.all(diff <= atol + rtol * np.abs(want.astype(np.float64)))))
        row.update(status="ok" if good else "FAIL")
    ok &= row["status"] == "ok"
    rows.append(row)
  rows += [dict(key=k, shape=tuple(np.shape(ours[k])), atol=0.0, rtol=0.0, err=float("nan"),
                status="extra") for k in ours if k not in ref]
  return rows, ok


def format_table(rows: list[dict[str, Any]]) -> str:
  width = max([len(r["key"]) for r in rows] + [6])
  lines = [f"{'output':{width}s} {'shape':>14s} {'max abs err':>11s} {'tolerance':>17s}  result"]
  for r in rows:
    tol = "exact" if r["atol"] == r["rtol"] == 0.0 else f"a{r['atol']:.0e} r{r['rtol']:.0e}"
    err = "-" if np.isnan(r["err"]) else f"{r['err']:.2e}"
    lines.append(f"{r['key']:{width}s} {str(r['shape']):>14s} {err:>11s} {tol:>17s}  {r['status']}")
  failed = [r for r in rows if r["status"] not in ("ok", "extra")]
  lines.append(f"{len(rows) - len(failed)} of {len(rows)} outputs pass"
               + (f"; FAILED: {', '.join(r['key'] for r in failed[:10])}" if failed else ""))
  return "\n".join(lines)


def run(family: str, fixture: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Every output of the fixture, recomputed by vlx at full float32 matmul precision."""
  import jax  # pylint: disable=import-outside-toplevel
  fixture = pathlib.Path(fixture)
  if not fixture.is_dir():
    raise ParityError(f"--fixture {fixture}: not a directory")
  fn, _ = family_runner(family)
  with jax.default_matmul_precision("highest"):
    out = fn(str(fixture))
  return {str(k): np.asarray(v) for k, v in out.items()}


PROG = "python -m vlx.convert.parity"


def _load_reference(path: str) -> dict[str, np.ndarray]:
  try:
    return dict(np.load(path))
  except (ValueError, OSError):
    raise ParityError(f"--compare {path}: not a .npz file of outputs (np.savez)") from None


@cli.entry_point(PROG, exit_on_error=False)
def main(argv: list[str] | None = None) -> int:
  """Exit status: 0 written (and every key passes), 1 some key fails, 2 user error (one line)."""
  ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  ap.add_argument("--family", required=True, help="model family, e.g. alpro")
  ap.add_argument("--fixture", required=True, help="fixture directory (config.json, *.pt, *.npz)")
  ap.add_argument("--out", required=True, help="where to write the outputs (.npz)")
  ap.add_argument("--compare", default=None, metavar="REF.npz",
                  help="reference outputs to compare with (e.g. FIXTURE/outputs.npz)")
  args = ap.parse_args(argv)
  start = time.time()
  if args.compare and not pathlib.Path(args.compare).is_file():  # fail before the long run
    raise ParityError(f"--compare {args.compare}: file not found")
  _, module = family_runner(args.family)  # an unknown family fails before the long run too
  ref = _load_reference(args.compare) if args.compare else None
  outputs = run(args.family, args.fixture)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "wb") as f:  # a file object: np.savez would append '.npz' to other names
    np.savez(f, **outputs)
  print(f"wrote {len(outputs)} outputs to {out} in {time.time() - start:.1f} s")
  if ref is None:
    return 0
  rows, ok = compare(outputs, ref, getattr(module, "TOLERANCES", DEFAULT_TOLERANCES))
  print(format_table(rows))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
