"""`python -m vlx.convert.parity --family F --fixture DIR --out OUT.npz [--compare REF.npz]`.

Runs a reference fixture (e.g. ../shared/reference/alpro/tiny, or any directory of the same format)
through vlx and writes every output under the fixture's key names: the family's
`Family.fixture_outputs(fixture_dir) -> {name: np.ndarray}`, compared at the family's
`Family.parity_tolerances` before DEFAULT_TOLERANCES (see below).
Everything runs under `jax.default_matmul_precision('highest')` (CPU/GPU/TPU give float32 matmuls).

`--compare REF.npz` prints, per key, the max abs error and pass/fail at the fixture README
tolerances, and exits 1 if any key fails (missing keys and shape mismatches fail too).
User errors (unknown family, missing fixture or reference file) print one line
`python -m vlx.convert.parity: error: ...` and exit 2 (vlx/cli.py).
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlx import cli, registry

# (key regex, atol, rtol): first match wins; atol = rtol = 0 means exact equality. The generic
# fixture README values (gradients rtol 1e-3, everything else 1e-4); a family puts its exact keys
# (labels, masks, metrics) and other rows first in `Family.parity_tolerances`.
DEFAULT_TOLERANCES: tuple[tuple[str, float, float], ...] = (
    (r"grad.*", 1e-6, 1e-3),
    (r".*", 1e-4, 1e-4),
)


class ParityError(cli.UserError):
  """The family or fixture cannot be run (printed as one line by the CLI)."""


def family_runner(family: str) -> tuple[Callable[[str], Mapping[str, Any]], Any]:
  """(the family's `fixture_outputs`, its `vlx.registry.Family` record)."""
  try:
    fam = registry.get(family)
  except ValueError as e:
    raise ParityError(f"family {family!r} has no fixture runner: {e}") from None
  if fam.fixture_outputs is None:
    raise ParityError(f"family {family!r} has no fixture runner (Family.fixture_outputs)")
  return fam.fixture_outputs, fam


def tolerances(family: Any) -> tuple[tuple[str, float, float], ...]:
  """The family's `parity_tolerances` first, then DEFAULT_TOLERANCES."""
  return tuple(getattr(family, "parity_tolerances", ())) + DEFAULT_TOLERANCES


def tolerance(key: str, table: Sequence[tuple[str, float, float]] = DEFAULT_TOLERANCES
              ) -> tuple[float, float]:
  for pattern, atol, rtol in table:
    if re.fullmatch(pattern, key):
      return atol, rtol
  return 0.0, 0.0


def align_named(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
  """`ours` with its name-indexed outputs reordered to the reference's names.

  A string array `P_names` labels the leading axis of the outputs `P_*` of the same length (e.g.
  grad_pretrain_names / grad_pretrain_norms). vlx writes such outputs for every parameter, so
  they hold for any fixture of the format; a fixture lists the names it checks, and the two
  compare by name. Left as they are when a reference name is absent (the row then fails)."""
  out = dict(ours)
  for key, names in ref.items():
    names = np.asarray(names)
    if not key.endswith("_names") or names.dtype.kind not in "US" or key not in ours:
      continue
    mine = [str(n) for n in np.asarray(ours[key]).reshape(-1)]
    index = {n: i for i, n in enumerate(mine)}
    want = [str(n) for n in names.reshape(-1)]
    if any(n not in index for n in want):
      continue
    idx = np.asarray([index[n] for n in want], np.int64)
    prefix = key[:-len("names")]
    for k in ours:
      if (k.startswith(prefix) and k in ref and np.ndim(ref[k]) and np.ndim(ours[k])
          and np.shape(ref[k])[0] == len(want) and np.shape(ours[k])[0] == len(mine)):
        out[k] = np.asarray(ours[k])[idx]
  return out


def compare(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
            table: Sequence[tuple[str, float, float]] = DEFAULT_TOLERANCES
            ) -> tuple[list[dict[str, Any]], bool]:
  """One row per reference key (+ keys only in `ours`, informational); ok = every row passes.
  Name-indexed outputs compare by name (`align_named`)."""
  ours = align_named(ours, ref)
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
  """One line per reference output; outputs the reference does not hold are counted, not listed
  (e.g. the gradient norms of parameters a fixture does not check)."""
  checked = [r for r in rows if r["status"] != "extra"]
  extra = len(rows) - len(checked)
  width = max([len(r["key"]) for r in checked] + [6])
  lines = [f"{'output':{width}s} {'shape':>14s} {'max abs err':>11s} {'tolerance':>17s}  result"]
  for r in checked:
    tol = "exact" if r["atol"] == r["rtol"] == 0.0 else f"a{r['atol']:.0e} r{r['rtol']:.0e}"
    err = "-" if np.isnan(r["err"]) else f"{r['err']:.2e}"
    lines.append(f"{r['key']:{width}s} {str(r['shape']):>14s} {err:>11s} {tol:>17s}  {r['status']}")
  failed = [r for r in checked if r["status"] != "ok"]
  lines.append(f"{len(checked) - len(failed)} of {len(checked)} outputs pass"
               + (f"; FAILED: {', '.join(r['key'] for r in failed[:10])}" if failed else "")
               + (f" ({extra} further outputs not in the reference)" if extra else ""))
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
  ap.add_argument("--family", required=True,
                  help=f"model family: one of {', '.join(registry.available())}")
  ap.add_argument("--fixture", required=True, help="fixture directory (config.json, *.pt, *.npz)")
  ap.add_argument("--out", required=True, help="where to write the outputs (.npz)")
  ap.add_argument("--compare", default=None, metavar="REF.npz",
                  help="reference outputs to compare with (e.g. FIXTURE/outputs.npz)")
  args = ap.parse_args(argv)
  start = time.time()
  if args.compare and not pathlib.Path(args.compare).is_file():  # fail before the long run
    raise ParityError(f"--compare {args.compare}: file not found")
  _, family = family_runner(args.family)  # an unknown family fails before the long run too
  ref = _load_reference(args.compare) if args.compare else None
  outputs = run(args.family, args.fixture)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "wb") as f:  # a file object: np.savez would append '.npz' to other names
    np.savez(f, **outputs)
  print(f"wrote {len(outputs)} outputs to {out} in {time.time() - start:.1f} s")
  if ref is None:
    return 0
  rows, ok = compare(outputs, ref, tolerances(family))
  print(format_table(rows))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
