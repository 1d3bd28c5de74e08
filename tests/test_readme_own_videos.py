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
  """The fenced ```bash blocks of the README section whose heading contains `heading_text` (the
  section ends at the next heading of the same or a higher level outside code fences)."""
  lines = (REPO / "README.md").read_text().splitlines()
  fenced, headings = False, []
  for i, line in enumerate(lines):
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced and re.match(r"#+ ", line):
      headings.append((i, len(line) - len(line.lstrip("#")), line))
  start, level = next((i, lv) for i, lv, text in headings if heading_text in text)
  end = next((i for i, lv, _ in headings if i > start and lv <= level), len(lines))
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


def test_paper_block_commands(tmp_path, reference_dir, own_videos):
  """The second block (paper size, converted weights), run at tiny size: the convert line on the
  ALPRO tiny fixture's released-format checkpoint as written; the vlx.main lines with `:own` ->
  `:tiny,own`, a converted directory of the tiny model, the demo vocabulary as $T and 2 steps."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from configs import alpro_msrvtt_ret  # pylint: disable=import-outside-toplevel
  from vlx.convert.engine import ConversionResult  # pylint: disable=import-outside-toplevel
  from vlx.convert.store import save_converted  # pylint: disable=import-outside-toplevel
  from vlx.data import text_ops  # pylint: disable=import-outside-toplevel
  from vlx.models import alpro  # pylint: disable=import-outside-toplevel

  block = readme_blocks("Your own videos")[1]
  assert set(SHELL_VARS.findall(block)) == {"C", "W", "D", "T"}, block
  commands = [c.replace("\\\n", " ") for c in re.split(r"\n(?=python )", block)
              if c.strip() and not c.lstrip().startswith("#")]
  commands = [re.sub(r"\n\s*#.*", "", c).strip() for c in commands]
  convert = [c for c in commands if "vlx.convert" in c]
  mains = [c for c in commands if "vlx.main" in c]
  assert len(convert) == 1 and len(mains) == 2 and "--mode eval" in mains[0]

  env = dict(os.environ, W=str(tmp_path / "W"), D=own_videos["data_dir"],
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  # 1. the converter line as written, on a released-format checkpoint
  ckpt = reference_dir / "alpro" / "tiny" / "checkpoint.pt"
  line = re.sub(r"--checkpoint \S+", f"--checkpoint {ckpt}", convert[0])
  line += " --set video.num_heads=4 --set text.num_heads=4"  # the fixture's (not in its shapes)
  run = subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True,
                       env=dict(env, C=str(tmp_path / "C_fixture")), timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert (tmp_path / "C_fixture" / "model_config.json").is_file()

  # 2. the vlx.main lines on a converted tiny model (same format as the converter writes)
  c = alpro_msrvtt_ret.get_config("tiny,own")
  model = alpro.FAMILY.build(c.model, rngs=nnx.Rngs(params=3))
  save_converted(ConversionResult(model=model, model_config=ml_collections.ConfigDict(
      c.model.to_dict()), variant="retrieval", report={}), tmp_path / "C")
  env.update(C=str(tmp_path / "C"), T=str(text_ops.SHIPPED["moving_shapes"]))
  for i, line in enumerate(mains):
    line = line.replace(":own ", ":tiny,own ").replace("--config.train.num_steps=1000",
                                                       "--config.train.num_steps=2")
    env["W"] = str(tmp_path / f"W{i}")
    run = subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    logged = [json.loads(l) for l in (tmp_path / f"W{i}" / "metrics.jsonl").read_text()
              .splitlines()]
    evals = {k: v for r in logged for k, v in r.items() if k.startswith("eval/video_text")}
    assert evals["eval/video_text/num_videos"] == 3, evals   # the val clips that exist
