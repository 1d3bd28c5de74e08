"""benchmarks/retrieval_speed.py on the tiny retrieval config: one trained workdir scored by the
exact (every pair) and the two-stage (contrastive top-k + matching head) modes, rows with the
timing, recall and the speed-up over the exact mode."""
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import retrieval_speed  # noqa: E402
from conftest import FAST_COMPILE  # noqa: E402


def test_exact_and_rerank_rows_on_the_same_clips(tiny_data_dir, tmp_path):
  rows = retrieval_speed.run("configs/alpro_msrvtt_ret.py:tiny", str(tmp_path / "w"),
                             tiny_data_dir, "test[:8]", ["vtm", "rerank"], [2, 8],
                             compiler_options=FAST_COMPILE)
  assert [(r["mode"], r["k"]) for r in rows] == [("vtm", None), ("rerank", 2), ("rerank", 8)]
  for r in rows:
    assert r["texts"] == r["videos"] == 8 and r["seconds"] > 0
    assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100
    assert r["speedup_vs_exact"] > 0
  # k = every video: the re-ranked order is the exact one (the matching head scores all pairs)
  assert rows[2]["r1"] == rows[0]["r1"] and rows[2]["r5"] == rows[0]["r5"]
