"""Retrieval speed at the scale users evaluate: exact (every pair through the matching head) vs
two-stage (contrastive top-k re-scored by the matching head), timings and R@1 side by side.

  python benchmarks/retrieval_speed.py --config configs/alpro_msrvtt_ret.py:demo \
      [--workdir W] [--data_dir D] [--split train[:1000]] [--k 8,16,32] [--modes vtm,rerank,vtc]
      [--out results.json]

A demo-size model is trained first (the config's own steps, from scratch or its init) unless
`--workdir` already holds a trained run; then the same clips are scored once per mode through
the regular evaluation (vlx.train, `--mode eval`): `vtm` / the family's exact pair mode scores
every (text, video) pair, `rerank` first ranks every video by the contrastive scores and
re-scores each text's top `k` with the matching head. Reported per mode: the eval's wall time
(`eval/<name>/seconds`, compile included, as a user waits for it), R@1 / R@5 / R@10, and the
speed-up over the exact mode. 1,000 texts x 1,000 videos is MSR-VTT 1k-A's size; moving_shapes'
train split has 4,000 clips, so `train[:1000]` gives that many on the demo data.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))
from step_time import load_config  # noqa: E402  (configs/<file>.py[:preset])

EXACT_MODES = ("vtm", "pair")     # the families' every-pair modes (vlx.evals.retrieval)


def retrieval_block(config, split: str, mode: str, k: int):
  """A copy of the config's first retrieval eval block, on `split`, in `mode` (and top-k)."""
  blocks = [b for b in config.evals.values() if b.get("type", "") == "retrieval"]
  if not blocks:
    raise SystemExit(f"{config.get('name', 'the config')} has no retrieval eval block")
  block = blocks[0].copy_and_resolve_references()
  block.update(split=split, mode=mode)
  if mode == "rerank":
    block.k = k
  return block


def run(spec: str, workdir: str, data_dir: str, split: str, modes: list[str],
        ks: list[int], compiler_options: dict | None = None) -> list[dict]:
  """Trains `spec` in `workdir` (unless done), then one eval per mode (and k); a row each."""
  from vlx import train  # pylint: disable=import-outside-toplevel (after sys.path)
  config = load_config(spec)
  if data_dir:
    config.data.data_dir = data_dir
  train.train_and_evaluate(config, workdir, mode="train",  # a trained workdir is left as is
                           compiler_options=compiler_options)
  rows = []
  for mode in modes:
    for k in (ks if mode == "rerank" else [0]):
      name = f"speed_{mode}{k or ''}"
      c = config.copy_and_resolve_references()
      c.evals = type(c.evals)({name: retrieval_block(config, split, mode, k)})
      out = train.train_and_evaluate(c, workdir, mode="eval", compiler_options=compiler_options)
      get = lambda key: out.get(f"eval/{name}/{key}")   # noqa: E731
      rows.append(dict(mode=mode, k=k or None, seconds=get("seconds"), r1=get("r1"),
                       r5=get("r5"), r10=get("r10"), texts=get("num_texts"),
                       videos=get("num_videos")))
  exact = [r for r in rows if r["mode"] in EXACT_MODES and r["seconds"]]
  for r in rows:
    if exact and r["seconds"]:
      r["speedup_vs_exact"] = round(exact[0]["seconds"] / r["seconds"], 2)
      r["r1_minus_exact"] = round(r["r1"] - exact[0]["r1"], 2)
  return rows


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="configs/<file>.py[:preset], a retrieval config")
  p.add_argument("--workdir", default="", help="a trained run (trained here if empty / new)")
  p.add_argument("--data_dir", default="", help="config.data.data_dir")
  p.add_argument("--split", default="train[:1000]", help="the clips to score (a TFDS split)")
  p.add_argument("--modes", default="vtm,rerank,vtc")
  p.add_argument("--k", default="8,16,32", help="rerank: texts' top-k videos re-scored")
  p.add_argument("--out", default="", help="also write the rows as JSON here")
  a = p.parse_args()
  workdir = a.workdir or tempfile.mkdtemp(prefix="retrieval_speed_")
  rows = run(a.config, workdir, a.data_dir, a.split, a.modes.split(","),
             [int(k) for k in a.k.split(",")])
  print(f"{'mode':<8} {'k':>4} {'seconds':>9} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'speed-up':>9}")
  for r in rows:
    print(f"{r['mode']:<8} {r['k'] or '':>4} {r['seconds'] or 0:>9.1f} {r['r1'] or 0:>6.1f} "
          f"{r['r5'] or 0:>6.1f} {r['r10'] or 0:>6.1f} {r.get('speedup_vs_exact', ''):>9}")
  print(json.dumps(rows))
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
