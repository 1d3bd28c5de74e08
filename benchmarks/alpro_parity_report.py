"""Prints max |vlx - reference| for every output of an ALPRO fixture.

python benchmarks/alpro_parity_report.py [FIXTURE_DIR]   (default ../shared/reference/alpro/tiny)
"""
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import vlx  # noqa: E402,F401
from vlx.models.alpro.load_fixture import compute_fixture_outputs  # noqa: E402


def main(fixture_dir: str) -> None:
  with jax.default_matmul_precision("highest"):
    ours = compute_fixture_outputs(fixture_dir)
  ref = np.load(pathlib.Path(fixture_dir) / "outputs.npz")
  print(f"{'output':72s} {'max abs err':>11s} {'max |ref|':>10s}")
  for key in ref.files:
    err = float(np.max(np.abs(ours[key] - ref[key]))) if ref[key].size else 0.0
    print(f"{key:72s} {err:11.2e} {float(np.max(np.abs(ref[key]))):10.3e}")


if __name__ == "__main__":
  default = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/alpro/tiny"
  main(sys.argv[1] if len(sys.argv) > 1 else str(default))
