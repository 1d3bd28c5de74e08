"""Where a train step's time goes: per-op device time of the compiled step, grouped.

  python benchmarks/profile_step.py --config configs/alpro_pretrain.py:demo --batch_size 32 \
      [--steps 3] [--top 15] [--trace_dir DIR] [--set FIELD=VALUE ...]

The step is compiled as benchmarks/step_time.py does (synthetic batch), run once, then `--steps`
times under `jax.profiler` (a Perfetto trace). Every trace event named after an instruction of
the compiled HLO is one executed op; loops / calls / conditionals are containers (their bodies'
ops are counted instead). Each op is put in a group from the HLO and its JAX metadata:

* phase: `forward` (under `jvp(...)`), `backward` (under `transpose(jvp(...))`), `update` (outside
  the differentiated function: optimizer, clipping, metrics);
* kind: `matmul` (dot / convolution, or a fusion built around one, incl. the XNNPACK /
  oneDNN custom fusions), `rng` (threefry / uniform / bernoulli draws), `copy/transpose` (ops and
  fusions that only move data: copies, transposes, reshapes, slices, concatenations),
  `reduce` (fusions with a reduction: softmax, norms, losses), `gelu(erf)` (the exact GELU's erf
  polynomials), `elementwise` (other fusions).

Op times are summed over the threads XLA runs ops on, so the total can exceed the step's wall time.

Printed: a table of groups (ms per step, share), the slowest single ops, and a JSON line.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import pathlib
import re
import sys
import tempfile

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from step_time import apply_overrides, load_config, prepare  # noqa: E402

from vlx import sharding as shd  # noqa: E402

MOVEMENT = {"copy", "transpose", "bitcast", "parameter", "reshape", "broadcast", "slice",
            "concatenate", "dynamic-slice", "dynamic-update-slice", "tuple", "get-tuple-element",
            "pad", "constant", "fusion"}
CONTAINERS = ("while", "call", "conditional", "async-start", "async-done")
RNG = re.compile(r"threefry|_uniform|_bernoulli|_gumbel|random_bits|rng")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S.*?\s([a-z][\w\-]*)\((.*)$")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text: str) -> tuple[dict[str, dict], dict[str, set[str]]]:
  """({instruction: {opcode, calls, op_name, custom}}, {computation: opcodes inside it})."""
  instrs: dict[str, dict] = {}
  comps: dict[str, set[str]] = collections.defaultdict(set)
  current = ""
  for line in text.splitlines():
    m = _INSTR.match(line)
    if m:
      name, opcode, rest = m.groups()
      calls = re.search(r"calls=%?([\w.\-]+)", rest)
      op_name = re.search(r'op_name="([^"]*)"', rest)
      instrs[name] = dict(opcode=opcode, calls=calls.group(1) if calls else "",
                          op_name=op_name.group(1) if op_name else "",
                          custom="kind=kCustom" in rest or "custom_call_target" in rest)
      comps[current].add(opcode)
      continue
    c = _COMP.match(line)
    if c and "=" not in line.split("{")[0]:
      current = c.group(1)
  return instrs, comps


def kind_of(info: dict, comps: dict[str, set[str]]) -> str:
  inside = comps.get(info["calls"], set()) | {info["opcode"]}
  if RNG.search(info["op_name"]) or "rng-bit-generator" in inside:
    return "rng"
  if inside & {"dot", "convolution"} or (info["opcode"] == "fusion" and info["custom"]):
    return "matmul"
  if inside & {"copy", "transpose"} and inside <= MOVEMENT:   # a pure layout change
    return "copy/transpose"
  if "reduce" in inside or "reduce-window" in inside:
    return "reduce"
  if "erf" in info["op_name"]:   # exact GELU: erf / erfc polynomials, costly on CPU
    return "gelu(erf)"
  return "elementwise"


def phase_of(op_name: str) -> str:
  if "transpose(jvp" in op_name:
    return "backward"
  return "forward" if "jvp(" in op_name else "update"


def trace_events(trace_dir: str) -> list[dict]:
  files = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))
  if not files:
    raise SystemExit(f"no Perfetto trace written under {trace_dir}")
  data = json.load(gzip.open(files[-1]))
  return data["traceEvents"] if isinstance(data, dict) else data


def profile(config, batch_size: int, steps: int, trace_dir: str,
            compiler_options: dict | None = None) -> dict:
  """{total_ms, groups {phase/kind: ms per step}, top_ops} of `steps` traced steps."""
  prep = prepare(config, batch_size, compiler_options)
  with jax.set_mesh(prep.mesh), shd.use_rules(prep.rules):
    compiled = prep.lower().compile()
    state, batch = prep.initial(config)
    state, m = compiled(state, batch)            # warm-up, outside the trace
    jax.block_until_ready(m)
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(steps):
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
    jax.profiler.stop_trace()
  instrs, comps = parse_hlo(compiled.as_text())
  groups: collections.Counter = collections.Counter()
  ops: collections.Counter = collections.Counter()
  for e in trace_events(trace_dir):
    info = instrs.get(e.get("name", ""))
    if e.get("ph") != "X" or info is None or info["opcode"] in CONTAINERS:
      continue
    ms = e.get("dur", 0) / 1000.0 / steps
    groups[(phase_of(info["op_name"]), kind_of(info, comps))] += ms
    ops[(e["name"], kind_of(info, comps), info["op_name"][-60:])] += ms
  total = sum(groups.values())
  return dict(total_ms=round(total, 2), groups={f"{p}/{k}": round(v, 2) for (p, k), v in
                                                sorted(groups.items(), key=lambda x: -x[1])},
              top_ops=[dict(op=o, kind=k, jax=j, ms=round(v, 2)) for (o, k, j), v in
                       ops.most_common(40)])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
  p.add_argument("--batch_size", type=int, default=0, help="0 = the config's global batch")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=15, help="slowest single ops to print")
  p.add_argument("--trace_dir", default="", help="keep the Perfetto trace here")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="config override (repeatable)")
  a = p.parse_args()
  config = load_config(a.config)
  apply_overrides(config, a.set)
  out = profile(config, a.batch_size or int(config.data.global_batch_size), a.steps,
                a.trace_dir or tempfile.mkdtemp(prefix="vlx_profile_"))
  total = out["total_ms"] or 1.0
  print(f"{'phase/kind':<28} {'ms/step':>9} {'share':>7}")
  for name, ms in out["groups"].items():
    print(f"{name:<28} {ms:>9.1f} {100 * ms / total:>6.1f}%")
  print(f"{'total (op time)':<28} {total:>9.1f}")
  for r in out["top_ops"][:a.top]:
    print(f"  {r['ms']:>8.1f} ms  {r['kind']:<15} {r['op']:<32} {r['jax']}")
  print(json.dumps(dict(config=a.config, **out)))


if __name__ == "__main__":
  main()
