"""Config presets and `validate(config)`: each impossible combination names its field."""
import subprocess
import sys

import pytest

from configs import alpro_pretrain
from vlx.config_validation import ConfigError, validate


@pytest.mark.parametrize("preset", ["", "demo", "tiny"])
def test_presets_validate(preset):
  c = alpro_pretrain.get_config(preset)
  validate(c, num_devices=8)
  validate(c, num_devices=1)


def test_paper_setting():
  c = alpro_pretrain.get_config("")
  assert (c.optim.lr, c.optim.b1, c.optim.b2, c.optim.eps) == (1e-4, 0.9, 0.98, 1e-6)
  assert (c.optim.weight_decay, c.optim.grad_clip, c.optim.schedule.warmup_ratio) == (0, 20, 0.05)
  assert c.data.global_batch_size == 256 and c.data.train.num_frames == 4
  assert (c.data.train.resolution, c.data.train.crop, c.data.train.sampling) == (256, 224,
                                                                                 "headtail")
  assert c.data.train.max_text_len == 30
  # stage 2 of two-stage pre-training: PEM with the prompter (spec §5.4, §9)
  assert c.model.pem and c.objectives.to_dict() == {"vtc": 1.0, "vtm": 1.0, "mlm": 1.0, "pem": 1.0}


def test_unknown_preset():
  with pytest.raises(ValueError, match="unknown config preset"):
    alpro_pretrain.get_config("huge")


def _tiny():
  return alpro_pretrain.get_config("tiny")


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.data.update(global_batch_size=12), "config.data.global_batch_size"),
    (lambda c: c.train.update(grad_accum=3), "config.data.global_batch_size"),
    (lambda c: c.optim.schedule.update(type="poly"), "config.optim.schedule.type"),
    (lambda c: c.optim.update(name="lamb"), "config.optim.name"),
    (lambda c: c.objectives.update(itc=1.0), "config.objectives.itc"),
    (lambda c: c.data.train.update(num_frames=8), "config.data.train.num_frames"),
    (lambda c: c.data.train.update(crop=16), "config.model.video.img_size"),
    (lambda c: c.objectives.update(pem=1.0), "config.objectives.pem"),
    (lambda c: c.model.update(pem=True, head="qa"), "config.model.head"),
    (lambda c: c.train.update(num_steps=-1), "config.train.num_steps"),
    (lambda c: c.model.update(family="nope"), "config.model.family"),
    (lambda c: c.evals.moving_shapes_test.update(type="caption"),
     "config.evals.moving_shapes_test.type"),
    (lambda c: c.evals.moving_shapes_test.update(num_views=3),
     "config.evals.moving_shapes_test.num_views"),
    (lambda c: c.evals.moving_shapes_test.update(protocol="vilt"),
     "config.evals.moving_shapes_test.protocol"),
    (lambda c: c.data.update(mlm_masking="span"), "config.data.mlm_masking"),
    (lambda c: c.mesh.update(axes=(("data", -1), ("model", 3))), "config.mesh.axes"),
])
def test_validate_names_the_field(edit, field):
  c = _tiny()
  edit(c)
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate(c, num_devices=8)


def test_typo_override_is_a_clear_error(repo_root, tmp_path):
  r = subprocess.run([sys.executable, "-m", "vlx.main", "--config",
                      "configs/alpro_pretrain.py:tiny", "--workdir", str(tmp_path),
                      "--config.train.num_step=3"], cwd=repo_root, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 2
  assert "num_step" in r.stderr   # the nearest existing field is suggested
  assert 'Did you mean "num_steps"' in r.stderr or "nearest: config.train.num_steps" in r.stderr
  assert "Traceback" not in r.stderr


def test_alpro_finetuning_input_follows_spec_section_7():
  from configs import alpro_msrvtt_qa, alpro_msrvtt_ret
  qa, ret = alpro_msrvtt_qa.get_config(""), alpro_msrvtt_ret.get_config("")
  for c in (qa, ret):  # decoded straight to 224x224, no crop
    assert (c.data.train.resolution, c.data.train.crop, c.data.train.sampling) == (224, 0, "rand")
  assert (qa.data.train.augment, ret.data.train.augment) == ("temporal_randaug", "")
