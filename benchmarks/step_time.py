"""Train-step time, examples/s and compiled peak memory for a config at a given batch size.

  python benchmarks/step_time.py --config configs/alpro_pretrain.py:demo --batch_size 32
  python benchmarks/step_time.py --config configs/alpro_pretrain.py --batch_size 2 --steps 2
  python benchmarks/step_time.py --config configs/alpro_pretrain.py --batch_size 16 --memory_only
  python benchmarks/step_time.py --config configs/allinone_pretrain.py:B --batch_size 16 \
      --memory_only --dtype bfloat16 --remat
  python benchmarks/step_time.py --config configs/eao_pretrain.py --batch_size 2240 --memory_only

Memory comes from XLA's compiled memory analysis of the jitted step lowered on abstract inputs
(nothing allocated), so it also works for sizes that would not fit; time needs real arrays.
Prints one JSON object per config: step_s (median of the timed steps, compile excluded),
step_s_spread (p90 - p10 of them), compile_s, flops (per step, all devices, from XLA's cost
analysis of the compiled step), flops_per_s, peak_flops and mfu = flops_per_s / peak_flops. The peak
is that of the devices the step runs on in the compute dtype (config.model.dtype): from --peak_file
(benchmarks/matmul_peak.py; by default this host's file when present) or, for known GPUs/TPUs, from
benchmarks/peak_flops.py; unknown: mfu null. XLA counts what it runs: with --remat (on GPU/TPU,
where the recomputation is kept) flops include the recomputed forward, so that mfu is a hardware
utilisation; the model's is the remat-off run's flops over the remat-on run's step_s.
--compilation_cache PATH turns on JAX's persistent cache (off by default here, so compile_s is a
cold compile unless asked).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import pathlib
import resource
import sys
import time
from typing import Any

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import matmul_peak, peak_flops  # noqa: E402
from vlx import compile_cache, optim, registry, steps  # noqa: E402
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


def compiled_flops(compiled) -> float | None:
  """FLOPs of one run of a compiled executable on one device (XLA's cost analysis: a dict, or a
  list of dicts in some jax versions), or None where the backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except (backends without cost analysis raise)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = cost.get("flops") if isinstance(cost, dict) else None
  return float(flops) if flops is not None and flops >= 0 else None


def peak_for(devices: list, dtype: str, peak_file: str = "") -> tuple[float | None, str]:
  """(peak FLOP/s of `devices` in `dtype`, where it came from). A matmul_peak.py file gives one
  host's rate (CPU devices of a host share its cores: counted once per process); the table gives
  one chip's. A file without `dtype` falls back to its float32 rate on CPU (XLA:CPU computes
  low-precision dots in float32)."""
  d0 = devices[0]
  path = pathlib.Path(peak_file) if peak_file else matmul_peak.default_path()
  if peak_file or (d0.platform == "cpu" and path.exists()):
    try:
      rates = json.loads(path.read_text())["flops_per_s"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"--peak_file={path}: not a matmul_peak.py result ({e})") from None
    rate = rates.get(dtype, rates.get("float32") if d0.platform == "cpu" else None)
    if rate is None:
      return None, f"{path} has no {dtype} rate"
    per = len({d.process_index for d in devices}) if d0.platform == "cpu" else len(devices)
    return float(rate) * per, str(path)
  chip = peak_flops.lookup(d0.device_kind, dtype)
  if chip is None:
    return None, f"unknown peak for {d0.device_kind!r} in {dtype}"
  return chip * len(devices), "benchmarks/peak_flops.py"


@dataclasses.dataclass
class Prepared:
  """The pieces of a jitted train step for a config and batch size (before compilation)."""
  family: Any
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: Any
  abstract: Any
  shardings: Any
  batch: dict
  batch_sharding: Any
  fn: Any

  def lower(self):
    abs_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self.batch_sharding)
                 for k, v in self.batch.items()}
    return self.fn.lower(steps.with_shardings(self.abstract, self.shardings), abs_batch)

  def initial(self, config) -> tuple[Any, dict]:
    """(train state, device batch) to run the compiled step on."""
    state = steps.create_state(self.family, config, self.tx, self.shardings)
    return state, {k: jax.device_put(v, self.batch_sharding) for k, v in self.batch.items()}


def prepare(config, batch_size: int, compiler_options: dict | None = None) -> Prepared:
  """The config's train step for `batch_size` on a synthetic batch (not yet compiled); run
  `lower()`, `initial()` inside `with jax.set_mesh(p.mesh), shd.use_rules(p.rules)`."""
  config.data.global_batch_size = batch_size
  family = registry.get(config.model.family)
  mesh = shd.make_mesh(config.mesh)
  rules = tuple(config.mesh.rules)
  tx, sched = optim.make_optimizer(config)
  graphdef, abstract = steps.abstract_state(family, config, tx)
  shardings = steps.state_shardings(abstract, tx, mesh, rules, family.frozen_params)
  fn = steps.jit_train_step(steps.make_train_step(family, config, graphdef, tx, sched),
                            shardings, mesh, compiler_options)
  return Prepared(family, mesh, rules, tx, abstract, shardings,
                  synthetic_batch(config, batch_size), shd.batch_sharding(mesh, rules), fn)


def bench(config, batch_size: int, num_steps: int, memory_only: bool,
          peak_file: str = "", compiler_options: dict | None = None) -> dict:
  """Compiles the config's train step for `batch_size` and times `num_steps` runs (after one
  warm-up). `compiler_options`: XLA options of the step (tests: fast unoptimised CPU builds)."""
  prep = prepare(config, batch_size, compiler_options)
  mesh, rules, abstract = prep.mesh, prep.rules, prep.abstract
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
  devices = list(mesh.devices.flat)
  dtype = str(config.model.get("dtype", "float32"))
  out = dict(config=config.get("name", ""), batch_size=batch_size, devices=len(devices),
             platform=devices[0].platform, device_kind=devices[0].device_kind, params=n_params,
             dtype=dtype, remat=bool(config.model.get("remat", False)))
  out["peak_flops"], out["peak_source"] = peak_for(devices, dtype, peak_file)
  with jax.set_mesh(mesh), shd.use_rules(rules):
    t0 = time.time()
    compiled = prep.lower().compile()
    out["compile_s"] = round(time.time() - t0, 2)
    per_device = compiled_flops(compiled)   # the partitioned program: one device's share
    out["flops"] = None if per_device is None else per_device * len(devices)
    mem = compiled.memory_analysis()
    if mem is not None:
      args, outs = mem.argument_size_in_bytes, mem.output_size_in_bytes
      temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
      out.update(argument_mb=round(args / 2**20, 1), output_mb=round(outs / 2**20, 1),
                 temp_mb=round(temp / 2**20, 1),
                 peak_mb=round((args + outs + temp - alias) / 2**20, 1))
    if memory_only:
      return out
    state, gb = prep.initial(config)
    state, m = compiled(state, gb)                      # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(num_steps):
      t0 = time.time()
      state, m = compiled(state, gb)
      jax.block_until_ready(m)
      times.append(time.time() - t0)
  step = float(np.median(times))
  p10, p90 = np.percentile(times, [10, 90])
  out.update(step_s=round(step, 4), step_s_spread=round(float(p90 - p10), 4),
             step_s_min=round(min(times), 4), step_s_max=round(max(times), 4),
             examples_per_s=round(batch_size / step, 2), loss=float(m["loss"]))
  out["flops_per_s"] = None if out["flops"] is None else out["flops"] / step
  out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  stats = devices[0].memory_stats()   # GPU/TPU allocators: the peak really used (CPU: None)
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  out["mfu"] = (None if out["flops_per_s"] is None or not out["peak_flops"] else
                round(out["flops_per_s"] / out["peak_flops"], 4))
  return out


def apply_overrides(config, items: list[str]) -> None:
  """`FIELD=VALUE` strings (`--set`) into the config; values as Python literals, else strings."""
  for item in items:
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


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", action="append", required=True,
                 help="configs/<file>.py[:preset]; repeat to compare side by side")
  p.add_argument("--batch_size", type=int, default=0, help="0 = the config's global batch")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--memory_only", action="store_true", help="compile + memory analysis only")
  p.add_argument("--dtype", default="", help="override config.model.dtype (e.g. bfloat16)")
  p.add_argument("--remat", action="store_true", help="set config.model.remat (recompute blocks)")
  p.add_argument("--peak_file", default="",
                 help="benchmarks/matmul_peak.py JSON (default: this host's, if present)")
  p.add_argument("--compilation_cache", default="off", metavar="PATH|off",
                 help="JAX persistent compilation cache folder (off: compile_s is a cold compile)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="config override, e.g. model.word_vocab_size=100000 (repeatable)")
  a = p.parse_args()
  compile_cache.enable(a.compilation_cache)
  for spec in a.config:
    config = load_config(spec)
    config.name = spec
    apply_overrides(config, a.set)
    if a.dtype:
      config.model.dtype = a.dtype
    if a.remat:
      config.model.remat = True
    bs = a.batch_size or int(config.data.global_batch_size)
    print(json.dumps(bench(config, bs, a.steps, a.memory_only, a.peak_file)), flush=True)


if __name__ == "__main__":
  main()
