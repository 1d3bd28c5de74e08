"""VIMPAC family wiring: the tiny pre-training and fine-tuning runs through the loop (mlm / nce
losses and mask metrics; multi-view classification eval), fine-tuning initialised from a
converted release folder at another clip length / frame size (the positional tables linearly
interpolated as the reference's --different-shape), and the config checks."""
import json
import pathlib
import shutil


import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import vimpac_pretrain, vimpac_ucf101
from conftest import FAST_COMPILE
from vlx import checkpoint as ckpt
from vlx import registry, train
from vlx.convert import __main__ as convert_cli
from vlx.logging_utils import read_metrics

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/vimpac/tiny"


@pytest.fixture(scope="module")
def tiny_runs(tiny_data_dir, tmp_path_factory):
  """configs/vimpac_pretrain.py:tiny and vimpac_ucf101.py:tiny, 2 steps each (+ the eval)."""
  out = {}
  for name, mod in (("pretrain", vimpac_pretrain), ("ucf101", vimpac_ucf101)):
    c = mod.get_config("tiny")
    c.data.data_dir = tiny_data_dir
    work = str(tmp_path_factory.mktemp(f"vimpac_{name}") / "w")
    out[name] = (c, work, train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE))
  return out


def test_tiny_pretraining_logs_mask_and_nce_metrics(tiny_runs):
  c, work, _ = tiny_runs["pretrain"]
  rows = read_metrics(work)
  for step in (1, 2):
    r = rows[step]
    assert r["train/mlm_loss"] > 0 and r["train/nce_loss"] > 0, r
    np.testing.assert_allclose(r["train/loss"], r["train/mlm_loss"] + r["train/nce_loss"],
                               rtol=1e-5)
    assert 0 <= r["train/mask_accuracy"] <= 100 and 0 < r["train/mask_ratio"] < 1


def test_resumed_pretraining_draws_the_same_masks_and_batches(tiny_data_dir, tmp_path):
  """Killed after step 1 and re-run: step 2's masks (mask_ratio / mask_accuracy), NCE batch and
  losses equal the uninterrupted run's — masks come from the step key, a function of (seed, step)."""
  c = vimpac_pretrain.get_config("tiny")
  c.data.data_dir = tiny_data_dir
  c.train.update(num_steps=2, ckpt_every=1, keep=3, log_every=1)
  work = str(tmp_path / "w")
  train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE)
  shutil.rmtree(pathlib.Path(work, "checkpoints", "2"))
  train.train_and_evaluate(c, work, mode="train", compiler_options=FAST_COMPILE)
  lines = pathlib.Path(work, "metrics.jsonl").read_text().splitlines()
  step2 = [r for r in map(json.loads, lines) if r["step"] == 2 and "train/loss" in r]
  assert len(step2) == 2      # logged by the first run, then by the resumed one
  first, resumed = step2
  for key in ("train/loss", "train/mlm_loss", "train/nce_loss", "train/mask_ratio",
              "train/mask_accuracy"):
    assert abs(resumed[key] - first[key]) <= 1e-6, (key, resumed[key], first[key])


def test_tiny_finetuning_reports_views_averaged_classification(tiny_runs):
  c, _, out = tiny_runs["ucf101"]
  name = "eval/moving_shapes_test"
  assert out[f"{name}/num_classes"] == 8 and out[f"{name}/num_videos"] == 16
  views = c.evals.moving_shapes_test.num_views
  assert views == 2 and out[f"{name}/num_views"] == 16 * views
  assert 0 <= out[f"{name}/top1"] <= out[f"{name}/top5"] <= 100
  assert np.isfinite(out[f"{name}/loss"])


@pytest.mark.torch
def test_finetuning_from_a_converted_release_interpolates_the_tables(tmp_path):
  """`python -m vlx.convert` on a release folder, then config.init.from_converted into a
  fine-tuning model with the fixture's fine-tuning shape: the positional tables equal the
  reference's interpolated ones, the pre-training heads are left out, cls_fc starts at zero."""
  release = tmp_path / "snap/pretrain/tiny/last"
  release.mkdir(parents=True)
  (release / "classifier.pt").symlink_to(FIXTURE / "checkpoint.pt")
  (release / "args.pickle").symlink_to(FIXTURE / "args.pickle")
  assert convert_cli.main(["--family", "vimpac", "--checkpoint", str(release),
                           "--out", str(tmp_path / "conv")]) == 0
  import json  # pylint: disable=import-outside-toplevel
  ft = json.loads((FIXTURE / "config.json").read_text())["finetune_args"]
  fam = registry.get("vimpac")
  m = ml_collections.ConfigDict(json.loads((tmp_path / "conv/model_config.json").read_text()))
  m.update(clip_len=ft["clip_len"], frame_size=ft["frame_size"], mlm_head=False, nce_head=False,
           num_classes=5)
  model = fam.build(m, rngs=nnx.Rngs(params=0))
  _, params, other = nnx.split(model, nnx.Param, ...)
  init = ml_collections.ConfigDict(dict(from_converted=str(tmp_path / "conv"), keep_init=()))
  state = ckpt.init_from(dict(params=params, other=other), init, family=fam)
  pos = state["params"]["backbone"]["positional_embedding"]
  want = np.load(FIXTURE / "outputs.npz")
  for axis in ("temporal", "height", "width"):
    np.testing.assert_allclose(np.asarray(pos[f"{axis}_pos_embedding"][...]),
                               want[f"ft_interp_{axis}_pos"], atol=1e-6)
  assert not np.any(np.asarray(state["params"]["cls_fc"]["kernel"][...]))


def _config(**model):
  c = vimpac_ucf101.get_config("tiny")
  c.model.update(model)
  return c


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.model.update(layout="T|H|W"), "divisible by 3"),
    (lambda c: c.model.update(clip_len=4), r"inputs.vq_tokens.num_frames=3 but the model "
                                           "expects 4"),
    (lambda c: c.model.update(num_classes=0), "num_classes > 0"),
    (lambda c: c.objectives.update(mlm=1.0), "separate runs"),
])
def test_config_checks_name_the_field(edit, match):
  c = vimpac_ucf101.get_config("tiny")
  edit(c)
  with pytest.raises(ValueError, match=match):
    registry.get("vimpac").validate_config(c)
  p = vimpac_pretrain.get_config("tiny")
  p.data.train.inputs.vq_tokens.clips = 0
  with pytest.raises(ValueError, match="clips=0: the contrastive"):
    registry.get("vimpac").validate_config(p)

