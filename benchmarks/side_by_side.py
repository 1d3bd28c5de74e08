"""Side-by-side train-step time and peak RSS: the authors' PyTorch code vs vlx, same config.

Issue 17's comparison: the same architecture and batch on the same CPU, fp32, dropout on, PEM on
both sides (ALPRO), remat off, compilation excluded from the step time. Each run is a FRESH
subprocess (so peak RSS is that run's alone): the original via benchmarks/original_step_time.py
under the interpreter that has its dependencies (--python), vlx via benchmarks/step_time.py.
Rounds alternate the order (round 0: original then vlx, round 1: vlx then original, ...), so
slow drift of the machine hits both sides alike; medians over rounds. Measure on an idle machine:
torch's OpenMP threads slow down by orders of magnitude when another process holds the cores.

Setup: see benchmarks/original_step_time.py (extracted repos in /work/orig, venv /work/origenv).
The four pairs of issue 17's table (each appends its runs and summary to --out):

  P="--rounds 2 --num_steps 5 --python /work/origenv/bin/python --out side_by_side.jsonl"
  python benchmarks/side_by_side.py --family alpro --repo /work/orig/alpro \
      --config configs/alpro_pretrain.py --batch_size 2 $P
  python benchmarks/side_by_side.py --family allinone --repo /work/orig/allinone \
      --config configs/allinone_pretrain.py --batch_size 2 $P
  python benchmarks/side_by_side.py --family alpro --repo /work/orig/alpro \
      --config configs/alpro_pretrain.py:demo --set model.pem=True --set objectives.pem=1.0 \
      --batch_size 32 $P
  python benchmarks/side_by_side.py --family allinone --repo /work/orig/allinone \
      --config configs/allinone_pretrain.py:demo --batch_size 32 $P
  python benchmarks/side_by_side.py --table side_by_side.jsonl     # all pairs as one table

Columns: original s/step and vlx s/step (median over rounds of each run's median step),
vlx / original, peak RSS original / vlx (GiB, getrusage max RSS of each process: vlx's
includes its compilation, the original has none), vlx compile (s, min-max over rounds); a pair
marked "(noisy)" had a run whose p90 - p10 step spread exceeded 20 % of its median: rerun it.
Parameter counts: the original's minus the parameters it builds but never uses (ALPRO's
TimeSformer classification heads) equal vlx's at the demo and base configs of both families
(checked by original_step_time.py: `params_match`).

What the two sides compute (same objectives, one difference in work each):
- ALPRO: both run VTC + VTM (hard negatives from the similarity rows) + MLM + PEM with the
  prompter forward (no gradient) on the crop. The original gives the frozen prompter (and its
  two unused TimeSformer heads) zero gradients (zero_none_grad), so its AdamW keeps moments for
  and updates them and its clipping norm covers them; what vlx does with frozen parameters is
  vlx's own (family.frozen_params). Both clip at the config's optim.grad_clip (the original
  always clips; 20 in its release config).
- All-in-one: both run MLM + ITM with its WPA (IPOT optimal transport, 50 iterations) on a
  half-positive / half-negative batch. vlx's demo config clips gradients at 5.0; the original's
  Lightning trainer does not clip (the base config clips on neither side).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
SIDES = ("original", "vlx")
NOISY = 0.2


def schedule(rounds: int) -> list[tuple[int, str]]:
  """(round, side) in run order: even rounds original first, odd rounds vlx first."""
  order = []
  for r in range(rounds):
    sides = SIDES if r % 2 == 0 else SIDES[::-1]
    order.extend((r, s) for s in sides)
  return order


def last_json(stdout: str) -> dict:
  """The last line of `stdout` that parses as a JSON object (the benchmarks print one)."""
  for line in reversed(stdout.strip().splitlines()):
    line = line.strip()
    if line.startswith("{"):
      try:
        return json.loads(line)
      except ValueError:
        continue
  raise ValueError("no JSON line in the output")


def commands(a: argparse.Namespace) -> dict[str, list[str]]:
  """The subprocess command of each side."""
  sets = [x for s in a.set for x in ("--set", s)]
  original = [a.python, str(REPO / "benchmarks/original_step_time.py"), "--family", a.family,
              "--repo", a.repo, "--config", a.config, "--batch_size", str(a.batch_size),
              "--num_steps", str(a.num_steps), "--warmup", str(a.warmup)] + sets
  vlx = [a.vlx_python, str(REPO / "benchmarks/step_time.py"), "--config", a.config,
         "--batch_size", str(a.batch_size), "--steps", str(a.num_steps)] + sets
  return dict(original=original, vlx=vlx)


def pair_name(family: str, config: str, overrides: list[str], batch_size: int) -> str:
  extra = f" [{' '.join(overrides)}]" if overrides else ""
  return f"{family} {config}{extra}, batch {batch_size}"


def summarize(pair: str, runs: list[dict]) -> dict[str, Any]:
  """One table row from the runs of a pair: each `run` is {side, round, result}."""
  def values(side, key):
    return [r["result"][key] for r in runs
            if r["side"] == side and r["result"].get(key) is not None]
  o_step, v_step = values("original", "step_s"), values("vlx", "step_s")
  if not o_step or not v_step:
    raise ValueError(f"{pair}: a side has no step_s")
  row = dict(pair=pair, rounds=len(v_step), original_step_s=statistics.median(o_step),
             vlx_step_s=statistics.median(v_step))
  row["ratio"] = row["vlx_step_s"] / row["original_step_s"]
  for side in SIDES:
    rss = values(side, "peak_rss_mb")
    row[f"{side}_rss_gib"] = statistics.median(rss) / 1024 if rss else None
  compile_s = values("vlx", "compile_s")
  row["vlx_compile_s"] = (min(compile_s), max(compile_s)) if compile_s else None
  for side, key in (("original", "params"), ("vlx", "params")):
    p = values(side, key)
    row[f"{side}_params"] = p[0] if p else None
  # a run whose own steps vary by more than NOISY of its median was disturbed (busy machine)
  row["noisy"] = any(r["result"].get("step_s_spread", 0) > NOISY * r["result"]["step_s"]
                     for r in runs if r["result"].get("step_s"))
  unused = values("original", "params_unused")
  row["original_params_unused"] = unused[0] if unused else None
  return row


def table(rows: list[dict]) -> str:
  """Markdown table in issue 17's layout."""
  def gib(x):
    return "?" if x is None else f"{x:.2f}"

  def comp(c):
    if not c:
      return "?"
    lo, hi = c
    return f"{lo:.0f} s" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} s"
  out = ["| pair | original s/step | vlx s/step | vlx / original | peak RSS original / vlx "
         "(GiB) | vlx compile |", "|---|---|---|---|---|---|"]
  for r in rows:
    noisy = " (noisy)" if r.get("noisy") else ""
    out.append(f"| {r['pair']}{noisy} | {r['original_step_s']:.3g} | {r['vlx_step_s']:.3g} | "
               f"{r['ratio']:.2f} | {gib(r['original_rss_gib'])} / {gib(r['vlx_rss_gib'])} | "
               f"{comp(r['vlx_compile_s'])} |")
  return "\n".join(out)


def read_rows(path: str) -> list[dict]:
  """Summary rows of a --out file (the last summary of each pair wins)."""
  rows = {}
  for line in pathlib.Path(path).read_text().splitlines():
    rec = json.loads(line)
    if rec.get("kind") == "summary":
      rows[rec["row"]["pair"]] = rec["row"]
  return list(rows.values())


def run_side(cmd: list[str], side: str, timeout: float) -> dict:
  res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout,
                       cwd=REPO)
  if res.returncode:
    tail = "\n".join(res.stderr.strip().splitlines()[-5:])
    raise SystemExit(f"{side} run failed (exit {res.returncode}): {' '.join(cmd)}\n{tail}")
  return last_json(res.stdout)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--family", choices=("alpro", "allinone"))
  p.add_argument("--config", help="vlx configs/<file>.py[:preset]")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="vlx config override, applied on both sides (repeatable)")
  p.add_argument("--batch_size", type=int, default=2)
  p.add_argument("--num_steps", type=int, default=5, help="timed steps per run (after warm-up)")
  p.add_argument("--warmup", type=int, default=1,
                 help="original's untimed steps (vlx's step_time always runs one)")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--repo", help="extracted original repository")
  p.add_argument("--python", default="/work/origenv/bin/python",
                 help="interpreter with the original's dependencies")
  p.add_argument("--vlx_python", default=sys.executable)
  p.add_argument("--timeout", type=float, default=3600, help="seconds per run")
  p.add_argument("--out", default="", help="append JSON lines (runs + summary) to this file")
  p.add_argument("--table", default="", metavar="FILE",
                 help="only print the table of the summaries in FILE (a former --out)")
  a = p.parse_args()
  if a.table:
    print(table(read_rows(a.table)))
    return
  for flag in ("family", "config", "repo"):
    if not getattr(a, flag):
      p.error(f"--{flag} is required (unless --table)")
  cmds = commands(a)
  pair = pair_name(a.family, a.config, a.set, a.batch_size)
  runs = []
  for rnd, side in schedule(a.rounds):
    result = run_side(cmds[side], side, a.timeout)
    runs.append(dict(kind="run", pair=pair, round=rnd, side=side, result=result))
    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
  row = summarize(pair, runs)
  if a.out:
    with open(a.out, "a", encoding="utf-8") as f:
      for r in runs + [dict(kind="summary", row=row)]:
        f.write(json.dumps(r) + "\n")
  print(table([row]))
  print(json.dumps(row))


if __name__ == "__main__":
  main()
