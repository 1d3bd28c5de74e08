"""Metric sinks: CLU writer (TensorBoard + log) plus `workdir/metrics.jsonl`; parameter table.

Only process 0 writes files (metrics.jsonl, eval JSON, parameters.txt, TensorBoard events); the
other processes' CLU writers only log. Workdirs may be local or cloud URLs (gs://, via epath)."""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath

from vlx.optim import path_str


def as_path(workdir: str | os.PathLike) -> pathlib.Path | epath.Path:
  """pathlib for local folders, etils.epath for URLs such as gs://bucket/run."""
  return epath.Path(str(workdir)) if "://" in str(workdir) else pathlib.Path(workdir)


class MetricsLog:
  """Writes each step's scalars to the CLU writer and, on process 0, one JSON line per call.

  The jsonl file is appended to, so a resumed run continues the same file (a step logged twice,
  before and after a resume, appears twice; readers take the last line per step)."""

  def __init__(self, workdir: str | os.PathLike):
    self.workdir = as_path(workdir)
    self.is_main = jax.process_index() == 0
    self.writer = metric_writers.create_default_writer(
        str(workdir), just_logging=not self.is_main)
    self.path = self.workdir / "metrics.jsonl"
    # Object stores cannot append: remote files are rewritten whole (kept here in memory).
    self._lines: list[str] | None = None
    if self.is_main and "://" in str(workdir):
      self._lines = self.path.read_text().splitlines(True) if self.path.exists() else []

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = {k: _to_python(v) for k, v in scalars.items()}
    self.writer.write_scalars(step, values)
    if self.is_main:
      line = json.dumps({"step": int(step), **values}) + "\n"
      if self._lines is None:
        with open(self.path, "a") as f:
          f.write(line)
      else:
        self._lines.append(line)
        self.path.write_text("".join(self._lines))
      write_eval_json(self.workdir, step, values)

  def flush(self) -> None:
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()


def write_eval_json(workdir: str | os.PathLike, step: int,
                    scalars: Mapping[str, Any]) -> list[pathlib.Path | epath.Path]:
  """Each eval's metrics ('eval/<name>/<metric>' keys) as `<workdir>/eval_<name>_step<step>.json`
  ({metric: value}): one file per evaluation, easy to collect into result tables."""
  groups: dict[str, dict[str, Any]] = {}
  for k, v in scalars.items():
    parts = k.split("/", 2)
    if len(parts) == 3 and parts[0] == "eval":
      groups.setdefault(parts[1], {})[parts[2]] = v
  paths = []
  for name, metrics in groups.items():
    path = as_path(workdir) / f"eval_{name}_step{int(step)}.json"
    path.write_text(json.dumps({"step": int(step), **metrics}, indent=1) + "\n")
    paths.append(path)
  return paths


def format_eta(seconds: float) -> str:
  """'1h 02m 03s', '4m 05s', '7s' (clu's ReportProgress rounds to whole minutes: '0m' for 59 s)."""
  if not math.isfinite(seconds):
    return "?"
  s = max(int(round(seconds)), 0)
  h, m, s = s // 3600, s // 60 % 60, s % 60
  return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{s}s"


class Progress:
  """Logs 'step S/N (P%), R steps/s, ETA 4m 05s' every `every` steps and at the last step. The
  clock starts at the first call (after the first step: compilation is not a step's time)."""

  def __init__(self, num_steps: int, every: int, clock: Any = time.monotonic):
    self.num_steps, self.every, self.clock = int(num_steps), max(int(every), 1), clock
    self._step: int | None = None
    self._time = 0.0

  def __call__(self, step: int) -> str | None:
    now = self.clock()
    if self._step is None:
      self._step, self._time = step, now
      return None
    if step % self.every and step != self.num_steps:
      return None
    rate = (step - self._step) / max(now - self._time, 1e-9)
    eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
    pct = 100.0 * step / self.num_steps if self.num_steps else 100.0
    text = (f"step {step}/{self.num_steps} ({pct:.1f}%), {rate:.2f} steps/s, "
            f"ETA {format_eta(eta)}")
    self._step, self._time = step, now
    logging.info("%s", text)
    return text


def _to_python(v: Any) -> float | int:
  v = np.asarray(v).item()
  if isinstance(v, float) and not math.isfinite(v):
    return v  # json writes NaN/Infinity; the loop stops on them anyway
  return v


def read_metrics(workdir: str | os.PathLike) -> dict[int, dict[str, Any]]:
  """{step: merged scalars} from metrics.jsonl, later lines winning (what tests and tools read)."""
  out: dict[int, dict[str, Any]] = {}
  path = as_path(workdir) / "metrics.jsonl"
  if not path.exists():
    return out
  for line in path.read_text().splitlines():
    if line.strip():
      row = json.loads(line)
      out.setdefault(int(row.pop("step")), {}).update(row)
  return out


def parameter_table(params: Any, max_rows: int = 400) -> str:
  """Plain-text table: path, shape, dtype, count; total at the end (logged at start of training)."""
  rows = []
  total = 0
  for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    n = int(np.prod(leaf.shape)) if leaf.shape else 1
    total += n
    rows.append((path_str(p), str(tuple(leaf.shape)), str(leaf.dtype), f"{n:,}"))
  head = ("path", "shape", "dtype", "count")
  shown = rows[:max_rows]
  widths = [max(len(r[i]) for r in shown + [head]) for i in range(4)]
  fmt = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))
  lines = [fmt(head), "-+-".join("-" * w for w in widths)] + [fmt(r) for r in shown]
  if len(rows) > max_rows:
    lines.append(f"... {len(rows) - max_rows} more")
  lines.append(f"Total: {total:,} parameters in {len(rows)} arrays")
  return "\n".join(lines)


def log_parameter_table(params: Any, workdir: str | os.PathLike | None = None) -> int:
  table = parameter_table(params)
  logging.info("Parameters:\n%s", table)
  if workdir is not None and jax.process_index() == 0:
    (as_path(workdir) / "parameters.txt").write_text(table + "\n")
  return sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params))
