"""Train-step time, examples/s and compiled peak memory for a config at a given batch size.

  python benchmarks/step_time.py --config configs/alpro_pretrain.py:demo --batch_size 32
  python benchmarks/step_time.py --config configs/alpro_pretrain.py --batch_size 2 --steps 2
  python benchmarks/step_time.py --config configs/alpro_pretrain.py --batch_size 16 --memory_only
  python benchmarks/step_time.py --config configs/allinone_pretrain.py:B --batch_size 16 \
      --memory_only --dtype bfloat16 --remat
  python benchmarks/step_time.py --config configs/eao_pretrain.py --batch_size 2240 --memory_only

Memory comes from XLA's compiled memory analysis of the jitted step lowered on abstract inputs
(nothing allocated), so it also works for sizes that would not fit; time needs real arrays.
Prints one JSON object per config.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlx import optim, registry, steps  # noqa: E402
from vlx import sharding as shd  # noqa: E402


def load_config(spec: str):
  path, _, preset = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("bench_config", REPO / path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return shd.resolve_strategy(module.get_config(preset))  # mesh.strategy -> axes + rules


def reader_inputs(config, batch_size: int, rs: np.random.RandomState) -> dict[str, np.ndarray]:
  """Random arrays of the shapes the config's modality readers yield (data.train.inputs):
  features / spectrograms / frames as normal noise, masks all ones, integer keys small ids."""
  from vlx.data import modalities  # pylint: disable=import-outside-toplevel (imports TF)
  out = {}
  for reader in modalities.make_readers(config.data.train, "config.data.train").values():
    for key, (shape, dtype) in reader.spec().items():
      if key.endswith("_mask"):
        out[key] = np.ones((batch_size,) + tuple(shape), dtype)
      elif np.issubdtype(dtype, np.integer):
        out[key] = rs.randint(0, 8, size=(batch_size,) + tuple(shape)).astype(dtype)
      else:
        out[key] = rs.randn(batch_size, *shape).astype(dtype)
  return out


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random arrays with the project batch keys the config's objectives need."""
  rs = np.random.RandomState(seed)
  t = config.data.train
  if t.get("inputs", None):   # per-modality readers (e.g. pre-computed features + audio)
    length = int(t.max_text_len)
    vocab = int(config.model.get("word_vocab_size", 0) or
                config.model.get("text", {}).get("vocab_size", 100))
    ids = rs.randint(1, max(2, min(vocab, 1000)), size=(batch_size, length)).astype(np.int32)
    ids[:, length * 3 // 4:] = 0
    return dict(reader_inputs(config, batch_size, rs), text_ids=ids,
                text_mask=(ids > 0).astype(np.int32))
  size = int(t.crop or t.resolution)
  length, vocab = int(t.max_text_len), int(config.model.get("text", {}).get("vocab_size", 100))
  ids = rs.randint(5, min(vocab, 1000), size=(batch_size, length)).astype(np.int32)
  ids[:, 0], ids[:, length * 3 // 4:] = 2, 0
  labels = np.where(rs.rand(batch_size, length) < 0.15, ids, -100).astype(np.int32)
  b = dict(video=rs.randn(batch_size, t.num_frames, size, size, 3).astype(np.float32),
           text_ids=ids, text_mask=(ids > 0).astype(np.int32),
           mlm_text_ids=np.where(labels >= 0, 4, ids).astype(np.int32), mlm_labels=labels)
  if "pem" in config.objectives:
    patch = int(config.model.video.patch_size)
    b["crop_video"] = b["video"].copy()
    b["mpm_mask"] = (rs.rand(batch_size, size // patch, size // patch) > 0.3).astype(np.float32)
  f_v, f_t = int(t.get("false_videos", 0) or 0), int(t.get("false_texts", 0) or 0)
  if f_v:  # All-in-one's dataset negatives (config.data.train.false_videos / false_texts)
    b["false_video"] = rs.randn(batch_size, f_v, *b["video"].shape[1:]).astype(np.float32)
  if f_t:
    b["false_text_ids"] = np.repeat(ids[:, None], f_t, axis=1)[:, :, ::-1].copy()
    b["false_text_mask"] = (b["false_text_ids"] > 0).astype(np.int32)
  return b


def bench(config, batch_size: int, num_steps: int, memory_only: bool) -> dict:
  config.data.global_batch_size = batch_size
  family = registry.get(config.model.family)
  mesh = shd.make_mesh(config.mesh)
  rules = tuple(config.mesh.rules)
  tx, sched = optim.make_optimizer(config)
  graphdef, abstract = steps.abstract_state(family, config, tx)
  shardings = steps.state_shardings(abstract, tx, mesh, rules, family.frozen_params)
  batch = synthetic_batch(config, batch_size)
  bsh = shd.batch_sharding(mesh, rules)
  fn = steps.jit_train_step(steps.make_train_step(family, config, graphdef, tx, sched),
                            shardings, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
  out = dict(config=config.get("name", ""), batch_size=batch_size, devices=jax.device_count(),
             platform=jax.devices()[0].platform, params=n_params,
             dtype=config.model.get("dtype", "float32"))
  with jax.set_mesh(mesh), shd.use_rules(rules):
    abs_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh) for k, v in batch.items()}
    t0 = time.time()
    compiled = fn.lower(steps.with_shardings(abstract, shardings), abs_batch).compile()
    out["compile_s"] = round(time.time() - t0, 2)
    mem = compiled.memory_analysis()
    if mem is not None:
      args, outs = mem.argument_size_in_bytes, mem.output_size_in_bytes
      temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
      out.update(argument_mb=round(args / 2**20, 1), output_mb=round(outs / 2**20, 1),
                 temp_mb=round(temp / 2**20, 1),
                 peak_mb=round((args + outs + temp - alias) / 2**20, 1))
    if memory_only:
      return out
    state = steps.create_state(family, config, tx, shardings)
    gb = {k: jax.device_put(v, bsh) for k, v in batch.items()}
    state, m = compiled(state, gb)                      # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(num_steps):
      t0 = time.time()
      state, m = compiled(state, gb)
      jax.block_until_ready(m)
      times.append(time.time() - t0)
  step = float(np.median(times))
  out.update(step_s=round(step, 4), examples_per_s=round(batch_size / step, 2),
             loss=float(m["loss"]))
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", action="append", required=True,
                 help="configs/<file>.py[:preset]; repeat to compare side by side")
  p.add_argument("--batch_size", type=int, default=0, help="0 = the config's global batch")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--memory_only", action="store_true", help="compile + memory analysis only")
  p.add_argument("--dtype", default="", help="override config.model.dtype (e.g. bfloat16)")
  p.add_argument("--remat", action="store_true", help="set config.model.remat (recompute blocks)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="config override, e.g. model.word_vocab_size=100000 (repeatable)")
  a = p.parse_args()
  for spec in a.config:
    config = load_config(spec)
    config.name = spec
    for item in a.set:
      field, _, value = item.partition("=")
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass   # a plain string
      node = config
      *parents, leaf = field.split(".")
      for name in parents:
        node = node[name]
      node[leaf] = value
    if a.dtype:
      config.model.dtype = a.dtype
    if a.remat:
      config.model.remat = True
    bs = a.batch_size or int(config.data.global_batch_size)
    print(json.dumps(bench(config, bs, a.steps, a.memory_only)), flush=True)


if __name__ == "__main__":
  main()
