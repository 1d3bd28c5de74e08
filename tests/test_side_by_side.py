"""benchmarks/side_by_side.py's bookkeeping (no original repository, no subprocess)."""
from __future__ import annotations

import json

import pytest

from benchmarks import side_by_side as sbs


def test_schedule_alternates_and_covers_each_side_once_per_round():
  order = sbs.schedule(3)
  assert order == [(0, "original"), (0, "vlx"), (1, "vlx"), (1, "original"),
                   (2, "original"), (2, "vlx")]
  assert sbs.schedule(0) == []


def test_last_json_skips_logs_and_takes_the_last_object():
  out = 'warning {not json\n{"a": 1}\nsome log\n{"a": 2}\n'
  assert sbs.last_json(out) == {"a": 2}
  with pytest.raises(ValueError):
    sbs.last_json("no json here\n")


def _runs():
  def run(side, rnd, step, rss, spread=0.0, **extra):
    return dict(kind="run", pair="p", round=rnd, side=side,
                result=dict(step_s=step, step_s_spread=spread, peak_rss_mb=rss, **extra))
  return [run("original", 0, 2.0, 1024, params=10, params_unused=1),
          run("vlx", 0, 3.0, 2048, compile_s=20.0, params=9),
          run("vlx", 1, 1.0, 4096, compile_s=24.0, params=9),
          run("original", 1, 4.0, 3072, params=10, params_unused=1)]


def test_summarize_takes_medians_per_side_and_the_ratio_vlx_over_original():
  row = sbs.summarize("p", _runs())
  assert row["original_step_s"] == 3.0 and row["vlx_step_s"] == 2.0
  assert row["ratio"] == pytest.approx(2.0 / 3.0)
  assert row["original_rss_gib"] == 2.0 and row["vlx_rss_gib"] == 3.0
  assert row["vlx_compile_s"] == (20.0, 24.0)
  assert (row["original_params"], row["original_params_unused"], row["vlx_params"]) == (10, 1, 9)
  assert row["rounds"] == 2 and not row["noisy"]


def test_summarize_flags_noisy_runs_and_rejects_a_missing_side():
  runs = _runs()
  runs[0]["result"]["step_s_spread"] = 0.5   # 25 % of 2.0
  assert sbs.summarize("p", runs)["noisy"]
  with pytest.raises(ValueError, match="no step_s"):
    sbs.summarize("p", [r for r in runs if r["side"] == "vlx"])


def test_table_and_out_file_round_trip(tmp_path):
  row = sbs.summarize("alpro x, batch 2", _runs())
  text = sbs.table([row])
  assert text.splitlines()[2] == "| alpro x, batch 2 | 3 | 2 | 0.67 | 2.00 / 3.00 | 20-24 s |"
  out = tmp_path / "o.jsonl"
  stale = dict(row, vlx_step_s=9.0)
  out.write_text("".join(json.dumps(r) + "\n" for r in
                         _runs() + [dict(kind="summary", row=stale),
                                    dict(kind="summary", row=row)]))
  rows = sbs.read_rows(str(out))
  assert len(rows) == 1 and rows[0]["vlx_step_s"] == 2.0   # the last summary of a pair wins
