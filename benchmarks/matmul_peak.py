"""The machine's practical matmul peak (FLOP/s of one large jitted square matmul), for MFU on CPU.

  python benchmarks/matmul_peak.py                       # float32, n=4096
  python benchmarks/matmul_peak.py --dtype float32 --dtype bfloat16 --out peak.json

Writes benchmarks/results/matmul_peak_<hostname>.json (or --out):
{"hostname", "platform", "device_kind", "jax", "n", "runs", "flops_per_s": {dtype: median}};
`benchmarks/step_time.py --peak_file` reads it (by default this host's file when present). CPU
vendors publish no single peak for a given core count and clock, so the measured GEMM rate of XLA on
this machine is the reference: an MFU against it says how close the step gets to XLA's own best
matmul. Run it alone on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def default_path() -> pathlib.Path:
  return REPO / "benchmarks" / "results" / f"matmul_peak_{socket.gethostname()}.json"


def measure(n: int, dtype: str, runs: int) -> list[float]:
  """FLOP/s (2 n^3 per product) of `runs` timed products of two n x n matrices, after a warm-up."""
  matmul = jax.jit(jnp.matmul)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  jax.block_until_ready(matmul(a, b))
  rates = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    rates.append(2.0 * n ** 3 / (time.perf_counter() - t0))
  return rates


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=4096, help="matrix side")
  p.add_argument("--runs", type=int, default=5, help="timed products per dtype (median reported)")
  p.add_argument("--dtype", action="append", default=None, help="float32 (default), bfloat16, ...")
  p.add_argument("--out", default="", help="JSON path (default: %s)" % default_path())
  a = p.parse_args(argv)
  dtypes = a.dtype or ["float32"]
  runs = {d: measure(a.n, d, a.runs) for d in dtypes}
  device = jax.devices()[0]
  result = dict(hostname=socket.gethostname(), platform=device.platform,
                device_kind=device.device_kind, jax=jax.__version__, n=a.n,
                runs={d: [round(r) for r in v] for d, v in runs.items()},
                flops_per_s={d: float(np.median(v)) for d, v in runs.items()})
  out = pathlib.Path(a.out) if a.out else default_path()
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
