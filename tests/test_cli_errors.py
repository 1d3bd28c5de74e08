"""Every command turns a user error into ONE line `<prog>: error: <message naming the field, flag or
file>` on stderr, exit status 2, no traceback; `--help` exits 0. Most cases call the command's main
in-process (fast); a few subprocesses check the real exit status and the absence of a traceback."""
import json
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import fake_family
from conftest import FAST_COMPILE
from configs import alpro_pretrain
from vlx import cli, registry, train
from vlx.logging_utils import Progress, format_eta, read_metrics

CONFIG = "configs/alpro_pretrain.py:tiny"


def _err_line(capsys) -> str:
  """stderr's only line (asserts there is exactly one and no traceback)."""
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1, err
  return lines[0]


def _exits(code: int, fn, *args):
  with pytest.raises(SystemExit) as e:
    fn(*args)
  assert e.value.code == code


def _run(repo_root, module, *args):
  env = dict(os.environ, PYTHONPATH=str(repo_root))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=repo_root, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _last_line(proc) -> str:
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return proc.stderr.strip().splitlines()[-1]


# --- --config.* overrides and config files (vlx.main and vlx.search share cli.parse_flags).

@pytest.mark.parametrize("args, line", [
    (["--config.train.num_stepz=3"], "prog: error: --config.train.num_stepz=3: config.train has "
     "no field 'num_stepz'; nearest: config.train.num_steps"),
    (["--config.train.num_steps=abc"], "prog: error: --config.train.num_steps=abc: "
     "config.train.num_steps expects an integer (it is 4), got 'abc'"),
    (["--config.optim.lr", "fast"], "prog: error: --config.optim.lr: config.optim.lr expects a "
     "number (it is 0.001), got 'fast'"),
    (["--config.evals.test.builder=video_text"], "prog: error: "
     "--config.evals.test.builder=video_text: config.evals has no field 'test'; its fields: "
     "moving_shapes_test"),
    (["--config.model.remat=maybe"], "prog: error: --config.model.remat=maybe: config.model.remat "
     "expects true or false (it is False), got 'maybe'"),
])
def test_bad_override_names_the_field(repo_root, monkeypatch, capsys, args, line):
  monkeypatch.chdir(repo_root)
  argv = ["prog", "--config", CONFIG, *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, sys_argv=argv)
  _exits(2, cli.parse_flags, argv, "prog", fv)
  assert _err_line(capsys) == line


@pytest.mark.parametrize("config, line", [
    ("configs/nope.py", "prog: error: --config=configs/nope.py: no such file 'configs/nope.py' "
     "(expected a config file such as configs/<family>_<task>.py[:preset], e.g. "
     "configs/allinone_pretrain.py[:demo])"),
    ("configs/alpro_pretrain.py:huge", "prog: error: --config=configs/alpro_pretrain.py:huge: "
     "unknown config preset 'huge'; expected one of ('', 'demo', 'tiny'), optionally with the "
     "modifiers ('own',) (e.g. --config configs/alpro_pretrain.py:demo or "
     "configs/alpro_msrvtt_ret.py:demo,own)"),
])
def test_bad_config_file_or_preset(repo_root, monkeypatch, capsys, config, line):
  monkeypatch.chdir(repo_root)
  argv = ["prog", "--config", config]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, sys_argv=argv)
  _exits(2, cli.parse_flags, argv, "prog", fv)
  assert _err_line(capsys) == line


def test_good_overrides_pass_the_check():
  c = alpro_pretrain.get_config("tiny")
  for path, raw in ((["train", "num_steps"], "3"), (["optim", "lr"], "3"),
                    (["model", "remat"], "true"), (["data", "train", "builder"], "video_text")):
    assert cli.check_override(c, path, raw) is None


def test_user_error_classes():
  """Every entry point catches exactly cli.USER_ERRORS: the project's user-error classes derive
  from cli.UserError; a programming error (e.g. KeyError) does not and keeps its traceback."""
  from vlx import config_validation, distributed, search
  from vlx.convert import errors, parity
  from vlx.data import annotations, pipeline, release_layout
  for cls in (config_validation.ConfigError, errors.ConversionError, errors.WrongFamilyError,
              pipeline.DatasetNotBuiltError, pipeline.BuilderMissingError, pipeline.SplitError,
              annotations.AnnotationError, release_layout.DatasetLayoutError, search.SearchError,
              parity.ParityError, distributed.DistributedConfigError):
    assert issubclass(cls, cli.UserError), cls

  @cli.entry_point("prog")
  def buggy():
    raise KeyError(101)
  with pytest.raises(KeyError):
    buggy()


# --- vlx.main (subprocesses: it shares absl flag names with vlx.search).

def test_main_help_and_unusable_workdir(repo_root, tmp_path):
  r = _run(repo_root, "vlx.main", "--help")
  assert r.returncode == 0 and "--workdir" in r.stdout, r.stderr[-2000:]
  (tmp_path / "file").write_text("x")
  r = _run(repo_root, "vlx.main", "--config", CONFIG, "--workdir", str(tmp_path / "file" / "w"))
  assert r.returncode == 2
  assert _last_line(r) == (f"python -m vlx.main: error: --workdir={tmp_path}/file/w: cannot be "
                           f"used as a folder ({tmp_path}/file is a file)")


def test_eval_name_follows_an_overridden_builder():
  c = alpro_pretrain.get_config("tiny")
  c.lock()
  c.evals.moving_shapes_test.builder = "video_text"
  assert cli.eval_names_follow_builders(c, cli.builder_names()) == {
      "moving_shapes_test": "video_text_test"}
  assert list(c.evals) == ["video_text_test"] and c.evals.video_text_test.builder == "video_text"
  c.evals = {"test": dict(builder="video_text"), "msrvtt_ret": dict(builder="msrvtt")}
  assert cli.eval_names_follow_builders(c, cli.builder_names()) == {}  # no dataset in the name


# --- vlx.convert and vlx.convert.parity (argparse mains returning the exit status).

def test_convert_errors_and_help(tmp_path, capsys):
  from vlx.convert import __main__ as convert
  text = tmp_path / "notes.txt"
  text.write_text("not a checkpoint\n")
  out = ["--out", str(tmp_path / "out")]
  cases = [
      (["--family", "alpro", "--checkpoint", str(text)], f"python -m vlx.convert: error: {text}: "
       "not a PyTorch checkpoint (neither a torch.save zip nor a pickle; expected a released "
       ".pt/.pth/.ckpt file)"),
      (["--family", "alpr", "--checkpoint", str(text)], "python -m vlx.convert: error: --family "
       "alpr: not a vlx model family; nearest: alpro (families: "
       f"{', '.join(registry.available())})"),
      (["--family", "alpro", "--checkpoint", str(tmp_path / "absent.pt")],
       f"python -m vlx.convert: error: checkpoint file not found: {tmp_path}/absent.pt"),
  ]
  for args, line in cases:
    assert convert.main(args + out) == 2
    assert _err_line(capsys) == line
  _exits(0, convert.main, ["--help"])
  help_text = capsys.readouterr().out
  for name in registry.available():
    family = registry.get(name)
    if family.converter:
      variants = getattr(family.converter_module(), "VARIANTS", ())
      assert f"  {name}: {', '.join(variants)}" in help_text


def test_parity_errors_and_help(tmp_path, capsys):
  from vlx.convert import parity
  bad_npz = tmp_path / "ref.npz"
  bad_npz.write_text("x")
  out = ["--out", str(tmp_path / "o.npz")]
  cases = [
      (["--family", "nope", "--fixture", str(tmp_path)], "python -m vlx.convert.parity: error: "
       "family 'nope' "),
      (["--family", "alpro", "--fixture", str(tmp_path / "none")],
       f"python -m vlx.convert.parity: error: --fixture {tmp_path}/none: not a directory"),
      (["--family", "alpro", "--fixture", str(tmp_path), "--compare", str(bad_npz)],
       f"python -m vlx.convert.parity: error: --compare {bad_npz}: not a .npz file of outputs "
       "(np.savez)"),
  ]
  for args, line in cases:
    assert parity.main(args + out) == 2
    assert _err_line(capsys).startswith(line)
  _exits(0, parity.main, ["--help"])


# --- vlx.data.pipeline and vlx-tfds.

@pytest.fixture(scope="module")
def bad_csv_folder(tmp_path_factory):
  from vlx.data import testing
  manual = tmp_path_factory.mktemp("bad_csv")
  for i in range(2):
    testing.write_video(manual / f"v{i}.mp4", num_frames=2, height=16, width=16, fps=2, seed=i)
  (manual / "video_text.csv").write_text("video,caption,split\nv0.mp4,a dog,train\nv1.mp4,,val\n")
  return manual


def test_pipeline_errors_and_help(bad_csv_folder, tmp_path, capsys):
  from vlx.data import pipeline
  prog, data = "python -m vlx.data.pipeline: error: ", ["--data_dir", str(tmp_path / "d")]
  cases = [
      (["--builder", "video_text", "--config", "captions", "--manual_dir", str(bad_csv_folder)],
       f"{prog}{bad_csv_folder}/video_text.csv:3: field 'caption': expected a non-empty caption"),
      (["--builder", "videotext"], f"{prog}no dataset builder "
       "data_builders/videotext/videotext_dataset_builder.py (builder 'videotext': "
       "config.data.train.builder, evals.<name>.builder or --builder); nearest: video_text"),
      (["--builder", "video_text", "--config", "caption"], f"{prog}--config=caption: "
       "data_builders/video_text has no such config; expected one of ['captions', 'labels', 'captions_audio']"),
      (["--builder", "video_text", "--config", "captions", "--manual_dir", str(tmp_path / "no")],
       f"{prog}--manual_dir {tmp_path}/no: does not exist; put your copy of the dataset there "
       "(layout: MANUAL_DOWNLOAD_INSTRUCTIONS in "
       "data_builders/video_text/video_text_dataset_builder.py)"),
  ]
  for args, line in cases:
    assert pipeline.main(args + data) == 2
    assert _err_line(capsys).endswith(line)
  _exits(0, pipeline.main, ["--help"])


def test_dataset_not_built_is_one_line(tmp_path):
  from vlx.data import pipeline
  with pytest.raises(pipeline.DatasetNotBuiltError) as e:
    pipeline.get_builder("video_text", "captions", str(tmp_path))
  line = cli.describe(e.value)
  assert "\n" not in line and line.startswith("dataset 'video_text' config 'captions' is not built")
  assert "vlx-tfds build data_builders/video_text --config=captions" in line


def test_tfds_cli_subprocess(repo_root, bad_csv_folder, tmp_path):
  """The console script's module: a malformed annotation file and an unknown builder config."""
  r = _run(repo_root, "vlx.data.tfds_cli", "build", "data_builders/video_text", "--config=captions",
           f"--manual_dir={bad_csv_folder}", f"--data_dir={tmp_path}")
  assert r.returncode == 2
  assert _last_line(r) == (f"vlx-tfds: error: {bad_csv_folder}/video_text.csv:3: field "
                           "'caption': expected a non-empty caption")


def test_tfds_cli_in_process(capsys, tmp_path):
  """vlx-tfds's main on parsed arguments (the parser itself registers absl flags that clash with
  vlx.search's in one process: built here as the namespace it returns)."""
  from types import SimpleNamespace as NS
  from vlx.data import tfds_cli
  args = NS(command=NS(positional_datasets=["data_builders/video_text"], datasets=[],
                       generation=NS(config="capt"),
                       paths=NS(manual_dir=None, add_name_to_manual_dir=False, data_dir=tmp_path)))
  _exits(2, tfds_cli.main, args)
  assert _err_line(capsys) == ("vlx-tfds: error: --config=capt: data_builders/video_text has no "
                               "such config; expected one of ['captions', 'labels', 'captions_audio']")


# --- vlx.search (its absl main in-process, as tests/test_search.py runs it).

def test_search_errors_and_help(repo_root, monkeypatch, capsys, tmp_path):
  from absl import app
  from vlx import search

  def call(*args):
    argv = ["vlx.search", "--config", f"{repo_root}/{CONFIG}", "--workdir", str(tmp_path), *args]
    monkeypatch.setattr(sys, "argv", argv)
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)
    search.main(search.parse_flags(argv))

  _exits(2, call, "--query= ")
  assert _err_line(capsys) == ("python -m vlx.search: error: --query: expected one or more "
                               "non-empty texts, got [' ']")
  _exits(2, call, "--query=a dog", "--config.data.train.buildr=video_text")
  assert _err_line(capsys) == (
      "python -m vlx.search: error: --config.data.train.buildr=video_text: config.data.train has "
      "no field 'buildr'; nearest: config.data.train.builder, config.data.train.builder_config")
  _exits(2, call, "--query=a dog")
  assert _err_line(capsys).startswith(f"python -m vlx.search: error: no checkpoint in {tmp_path}")
  app.define_help_flags()
  _exits(0, call, "--help")


# --- Small things: the ETA, a finished workdir.

def test_eta_in_minutes_and_seconds():
  assert [format_eta(s) for s in (0, 7.4, 59.6, 65, 3723)] == [
      "0s", "7s", "1m 00s", "1m 05s", "1h 02m 03s"]
  now = [5.0]
  progress = Progress(301, every=100, clock=lambda: now[0])
  assert progress(1) is None                  # the clock starts after the first (compiled) step
  now[0] = 38.0
  assert progress(100) == "step 100/301 (33.2%), 3.00 steps/s, ETA 1m 07s"
  assert progress(150) is None


def test_finished_workdir_is_left_alone(monkeypatch, tmp_path):
  orig = registry.get
  monkeypatch.setattr(registry, "get", lambda f: fake_family.FAMILY if f == "fake" else orig(f))
  kw = dict(make_train_iterator=fake_family.make_train_iterator,
            make_eval_batches=fake_family.make_eval_batches, compiler_options=FAST_COMPILE)
  c = fake_family.toy_config()
  c.train.update(num_steps=2, ckpt_every=2, log_every=2)
  first = train.train_and_evaluate(c, str(tmp_path), **kw)
  rows = (tmp_path / "metrics.jsonl").read_text()
  again = train.train_and_evaluate(c, str(tmp_path), **kw)
  assert (tmp_path / "metrics.jsonl").read_text() == rows  # no duplicate eval row
  assert again == read_metrics(tmp_path)[2] and again["eval/toy_test/r1"] == first[
      "eval/toy_test/r1"]
  assert "--mode eval" in train.finished_message(str(tmp_path), 2, 2)
  assert [json.loads(l)["step"] for l in rows.splitlines()] == [2, 2]


def test_unknown_split_is_named_before_training(tiny_data_dir):
  from vlx.data import pipeline
  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = tiny_data_dir
  c.data.train.split = "tran"
  with pytest.raises(pipeline.SplitError) as e:
    pipeline.check_datasets(c, train=True, evals=True)
  assert cli.describe(e.value).startswith("config.data.train.split='tran': dataset "
                                          "'moving_shapes' in ")
  assert cli.describe(e.value).endswith("has splits ['test', 'train', 'val']")
  c.data.train.split = "train[:50%]+test"
  c.evals.moving_shapes_test.split = "valid"
  with pytest.raises(pipeline.SplitError,
                     match=r"^config\.evals\.moving_shapes_test\.split='valid'"):
    pipeline.check_datasets(c, train=True, evals=True)
