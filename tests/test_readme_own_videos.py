"""The README's "Your own videos" CPU block, run verbatim (extracted from README.md) on a dozen
generated clips: it must build the dataset, fine-tune the demo model and log retrieval metrics of
the val split in `$W/metrics.jsonl`, using only the shell variables $M, $D and $W."""
from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import shlex
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
  # as a user runs it: one CPU device, XLA's default code generation (FAST_COMPILE would compile
  # faster but run the 60 steps slower: measured ~15% slower overall)
  env.pop("XLA_FLAGS", None)
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


def _expand(line: str, env: dict[str, str]) -> list[str]:
  """A README command as its shell would split it: $VAR / ${VAR} from `env` (an unset variable
  is a KeyError), then shlex words."""
  line = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env[m.group(1)], line)
  return shlex.split(line)


def _main_config(argv: list[str]):
  """`python -m vlx.main ARGS` parsed as vlx.main parses it (cli.parse_flags, the locked
  --config FILE[:preset] with its --config.* overrides): (config, workdir, mode). Every other flag
  must be one vlx/main.py defines (vlx.main is not imported: its absl flags would clash with
  vlx.search's in this process)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from vlx import cli  # pylint: disable=import-outside-toplevel
  assert argv[:3] == ["python", "-m", "vlx.main"], argv
  source = (REPO / "vlx" / "main.py").read_text()
  for name in {a[2:].split("=")[0] for a in argv[3:] if a.startswith("--")}:
    if not name.startswith("config."):
      assert re.search(rf'DEFINE_\w+\(\s*"{name}"', source), f"vlx.main has no flag --{name}"
  argv = ["vlx.main", *argv[3:]]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, sys_argv=argv,
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
  flags.DEFINE_enum("mode", "train_eval", ["train", "eval", "train_eval"], "mode", flag_values=fv)
  assert cli.parse_flags(argv, "python -m vlx.main", fv) == ["vlx.main"]
  config = fv["config"].value
  cli.eval_names_follow_builders(config, cli.builder_names())   # as vlx.main does
  return config, fv["workdir"].value, fv["mode"].value


def test_paper_block_commands(tmp_path, reference_dir, own_videos, monkeypatch, capsys):
  """The second block (paper size, converted weights), run at tiny size in this process (each
  line's words as the shell passes them, through the command's own argument parsing; the
  verbatim subprocess run of vlx.main is the first block's test): the convert line on the ALPRO
  tiny fixture's released-format checkpoint as written; the vlx.main lines with `:own` ->
  `:tiny,own`, a converted directory of the tiny model, the demo vocabulary as $T and 2 steps.
  The fine-tune line is also the ALPRO case of tests/test_own_videos.py's every-family `:own`
  check (train split trains, val split evaluates every caption under the `video_text` name)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from configs import alpro_msrvtt_ret  # pylint: disable=import-outside-toplevel
  from conftest import FAST_COMPILE  # pylint: disable=import-outside-toplevel
  from vlx import train  # pylint: disable=import-outside-toplevel
  from vlx.convert import __main__ as convert_cli  # pylint: disable=import-outside-toplevel
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
  monkeypatch.chdir(REPO)

  # 0. the converter line verbatim in a shell, as `python -m vlx.convert`: its flags parse; the
  # README's checkpoint path does not exist here, so exit status 2 with one error line naming it
  env = dict(os.environ, C=str(tmp_path / "C_absent"),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  run = subprocess.run(["bash", "-c", convert[0]], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=300)
  ckpt_arg = re.search(r"--checkpoint (\S+)", convert[0]).group(1)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1] == (
      f"python -m vlx.convert: error: checkpoint file not found: {ckpt_arg}"), run.stderr[-2000:]
  assert not (tmp_path / "C_absent").exists()

  # 1. the converter line as written, on a released-format checkpoint
  ckpt = reference_dir / "alpro" / "tiny" / "checkpoint.pt"
  line = re.sub(r"--checkpoint \S+", f"--checkpoint {ckpt}", convert[0])
  line += " --set video.num_heads=4 --set text.num_heads=4"  # the fixture's (not in its shapes)
  argv = _expand(line, dict(C=str(tmp_path / "C_fixture")))
  assert argv[:3] == ["python", "-m", "vlx.convert"], argv
  assert convert_cli.main(argv[3:]) == 0, capsys.readouterr().err
  assert "0 unmapped, 0 missing" in capsys.readouterr().out
  assert (tmp_path / "C_fixture" / "model_config.json").is_file()

  # 2. the vlx.main lines on a converted tiny model (same format as the converter writes)
  c = alpro_msrvtt_ret.get_config("tiny,own")
  model = alpro.FAMILY.build(c.model, rngs=nnx.Rngs(params=3))
  save_converted(ConversionResult(model=model, model_config=ml_collections.ConfigDict(
      c.model.to_dict()), variant="retrieval", report={}), tmp_path / "C")
  env = dict(C=str(tmp_path / "C"), T=str(text_ops.SHIPPED["moving_shapes"]),
             D=own_videos["data_dir"])
  for i, line in enumerate(mains):
    line = line.replace(":own ", ":tiny,own ").replace("--config.train.num_steps=1000",
                                                       "--config.train.num_steps=2")
    config, workdir, mode = _main_config(_expand(line, dict(env, W=str(tmp_path / f"W{i}"))))
    assert (config.init.from_converted, config.data.data_dir, config.data.tokenizer) == (
        env["C"], env["D"], env["T"])
    assert (config.data.train.builder, config.data.train.builder_config,
            config.data.train.split) == ("video_text", "captions", "train")
    assert [(n, e.builder, e.split) for n, e in config.evals.items()] == [
        ("video_text", "video_text", "val")]
    assert mode == ("eval" if i == 0 else "train_eval")
    out = train.train_and_evaluate(config, workdir, mode=mode, compiler_options=FAST_COMPILE)
    assert out["eval/video_text/num_videos"] == 3, out   # the val clips that exist
    assert out["eval/video_text/num_texts"] == 3, out    # every caption (one per val clip)
    logged = [json.loads(l) for l in (tmp_path / f"W{i}" / "metrics.jsonl").read_text()
              .splitlines()]
    assert any("eval/video_text/r1" in r for r in logged)
    assert any("train/loss" in r for r in logged) == (i == 1)   # zero-shot: no training
