"""The README's "Your own videos" CPU block, run verbatim (extracted from README.md) on a dozen
generated clips: it must build the dataset, fine-tune the demo model and log retrieval metrics of
the val split in `$W/metrics.jsonl`, using only the shell variables $M, $D and $W."""
from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from vlx.data import testing

REPO = pathlib.Path(__file__).resolve().parents[1]
SHELL_VARS = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def readme_blocks(heading_text: str) -> list[str]:
  """The fenced ```bash blocks of the README section whose heading contains `heading_text`."""
  text = (REPO / "README.md").read_text()
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("#") and heading_text in l)
  level = len(lines[start]) - len(lines[start].lstrip("#"))
  end = next((i for i in range(start + 1, len(lines))
              if lines[i].startswith("#" * level + " ") or
              (lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) < level
               and not lines[i].startswith("#!"))), len(lines))
  section = "\n".join(lines[start:end])
  return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_first_block_uses_only_m_d_w():
  block = readme_blocks("Your own videos")[0]
  assert set(SHELL_VARS.findall(block)) == {"M", "D", "W"}, block
  assert "vlx.main" in block and "video_text" in block


def _write_clips(manual: pathlib.Path, n: int = 12) -> list[tuple[str, str, str]]:
  """n short clips of two moving-pattern kinds; 2/3 train, 1/3 val, two captions each."""
  rows = []
  for i in range(n):
    path = f"clips/clip{i:02d}{'.mp4' if i % 3 else '.webm'}"
    testing.write_video(manual / path, num_frames=16, height=48, width=64, fps=8, seed=i)
    split = "val" if i % 3 == 2 else "train"
    rows.append((path, f"a red square moves left {i}", split))
    rows.append((path, f"a square moving to the left {i}", split))
  with open(manual / "video_text.csv", "w", newline="") as f:
    csv.writer(f).writerows([("video", "caption", "split"), *rows])
  return rows


@pytest.mark.slow
def test_own_videos_cpu_block_runs_verbatim(tmp_path):
  block = readme_blocks("Your own videos")[0]
  manual, data_dir, workdir = tmp_path / "M", tmp_path / "D", tmp_path / "W"
  rows = _write_clips(manual)
  env = dict(os.environ, M=str(manual), D=str(data_dir), W=str(workdir),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  env.pop("XLA_FLAGS", None)  # as a user runs it: one CPU device
  proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  logged = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = {k: v for r in logged for k, v in r.items() if k.startswith("eval/")}
  names = {k.split("/")[1] for k in evals}
  assert names and all(n.startswith("video_text") for n in names), names
  val_videos = len({r[0] for r in rows if r[2] == "val"})
  for name in names:
    assert evals[f"eval/{name}/num_videos"] == val_videos
    for metric in ("r1", "r5", "r10", "medr", "meanr"):
      assert f"eval/{name}/{metric}" in evals
    assert 0.0 <= evals[f"eval/{name}/r1"] <= evals[f"eval/{name}/r5"] <= 100.0
  assert any("train/loss" in r for r in logged)
  assert '"eval/' in proc.stdout  # the block's last line shows the metrics
