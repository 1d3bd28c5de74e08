"""Training dataset mixtures (ALPRO's MetaLoader): entry syntax, the (seed, step) draws, resume,
hosts and the `is_image` key, with two small TFDS builders defined here: `mixvid` (clips of 3-6
frames) and `miximg` (1-frame images, IS_IMAGE). Frames encode where they come from: B = 60 for
mixvid, 200 for miximg; G = 10 + 20 x clip index; R = 10 + 20 x frame + a horizontal ramp."""
import sys
import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from configs import (alpro_didemo_ret, alpro_msrvtt_qa, alpro_msrvtt_ret, alpro_msvd_qa,
                     alpro_pretrain, alpro_prompter_pretrain, common)
from vlx.config_validation import ConfigError, validate
from vlx.data import mixture, tasks, train_stream, video_ops

BLUE = {"mixvid": 60, "miximg": 200}


def _builder(name: str, frames: list[int], image: bool):
  class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    IS_IMAGE = image
    code_path = epath.Path(__file__)

    def _info(self):
      text = tfds.features.Text()
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
          video=tfds.features.Video((None, None, None, 3), encoding_format="jpeg"),
          video_id=text, captions=tfds.features.Sequence(text))))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, n in enumerate(frames):
        video = np.zeros((n, 16, 20, 3), np.uint8)
        video[..., 0] = (10 + 20 * np.arange(n))[:, None, None] + 4 * np.arange(20)  # + a ramp
        video[..., 1], video[..., 2] = 10 + 20 * i, BLUE[name]
        yield f"{name}_{i}", dict(video=video, video_id=f"{name}_{i}",
                                  captions=[f"a {('red', 'blue')[i % 2]} circle"])

  Fake.name = name
  Fake.__name__ = name
  return Fake


BUILDERS = {"mixvid": _builder("mixvid", [3, 4, 5, 6, 3, 4, 5, 6, 4, 5], False),
            "miximg": _builder("miximg", [1] * 7, True)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("mixture")
  for name, cls in BUILDERS.items():
    module = types.ModuleType(f"data_builders.{name}.{name}_dataset_builder")
    module.Builder = cls
    sys.modules[module.__name__] = module       # what pipeline.get_builder imports
    cls(data_dir=str(path)).download_and_prepare()
  return path


def _config(data_dir, mixture_=(), builder="mixvid", batch=4, **train):
  c = common.base_config()
  c.seed = 7
  c.data.update(data_dir=str(data_dir), global_batch_size=batch, shuffle_buffer=16,
                tokenizer="moving_shapes")
  c.data.train.update(dict(dict(builder=builder, num_frames=4, resolution=16, max_text_len=12,
                                mixture=tuple(mixture_)), **train))
  return c


def _take(config, n, **kw):
  kw = dict(dict(process_index=0, process_count=1), **kw)
  ds = train_stream._train_dataset(config, **kw)
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


def _source(video):
  """'mixvid' / 'miximg' per row of normalised [B, T, H, W, 3] clips (from the blue channel)."""
  raw = (video * video_ops.CLIP_STD + video_ops.CLIP_MEAN) * 255
  blue = raw[..., 2].mean(axis=(1, 2, 3))
  return ["miximg" if b > 130 else "mixvid" for b in blue]


# -- syntax and validation ------------------------------------------------------------------------
def test_entries_parse_and_errors_name_the_field():
  t = ml_collections.ConfigDict(dict(builder="webvid", builder_config="", mixture=(
      "webvid", "cc3m/short224", "howto100m:0.5")))
  assert mixture.parse(t) == [mixture.Entry("webvid"), mixture.Entry("cc3m", "short224"),
                              mixture.Entry("howto100m", "", 0.5)]
  t.mixture = ()
  assert mixture.parse(t) == [mixture.Entry("webvid")]
  for bad, why in [("cc3m:0", "must be > 0"), ("cc3m:x", "not a number"), ("", "non-empty"),
                   ("cc 3m", "builder name"), ("cc3m/", "builder config"),
                   ("webvid:2", "listed twice")]:
    t.mixture = ("webvid", bad)
    with pytest.raises(ValueError, match=r"config\.data\.train\.mixture\[1\]") as e:
      mixture.parse(t)
    assert why in str(e.value)


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.data.train.update(mixture=("moving_shapes", "cc3m:-1")),
     r"config\.data\.train\.mixture\[1\]"),
    (lambda c: c.data.train.update(augment="randaug"), r"config\.data\.train\.augment"),
    (lambda c: c.data.train.update(image_augment="crop"), r"config\.data\.train\.image_augment"),
    (lambda c: c.data.train.update(mixture=("a", "b"), task="qa"), r"config\.data\.train\.mixture"),
])
def test_validate_names_the_field(edit, field):
  c = alpro_pretrain.get_config("tiny")
  edit(c)
  with pytest.raises(ConfigError, match=field):
    validate(c, num_devices=8)


def test_paper_preset_and_demo_unchanged():
  p = alpro_pretrain.get_config("")
  assert tuple(p.data.train.mixture) == ("webvid", "cc3m")
  assert (p.data.train.augment, p.data.train.image_augment) == ("temporal_randaug",
                                                                "image_randaug")
  for preset in ("demo", "tiny"):
    for module in (alpro_pretrain, alpro_msrvtt_qa, alpro_msrvtt_ret):
      t = module.get_config(preset).data.train
      assert (tuple(t.mixture), t.augment, t.image_augment) == ((), "", "")
  for module in (alpro_msrvtt_qa, alpro_msvd_qa):
    assert module.get_config("").data.train.augment == "temporal_randaug"
  for module in (alpro_msrvtt_ret, alpro_didemo_ret):
    assert module.get_config("").data.train.augment == ""
  assert tuple(alpro_prompter_pretrain.get_config("").data.train.mixture) == ("webvid", "cc3m")


# -- draws ----------------------------------------------------------------------------------------
def test_draws_follow_weights_and_depend_only_on_seed_and_step():
  d = mixture.draws(7, [1.0, 3.0], 0, 40_000)
  assert abs((d == 1).mean() - 0.75) < 0.01
  u = mixture.draws(7, [1, 1, 1], 0, 30_000)
  np.testing.assert_allclose(np.bincount(u) / 30_000, [1 / 3] * 3, atol=0.01)
  np.testing.assert_array_equal(mixture.draws(7, [1, 3], 1000, 1100), d[1000:1100])
  assert (mixture.draws(8, [1, 3], 0, 1000) != d[:1000]).mean() > 0.2  # another seed differs
  no_runs = d[:2000]   # not periodic / not in long runs
  assert np.abs(np.diff(no_runs)).sum() > 500
  np.testing.assert_array_equal(mixture.served_before(7, [1, 3], 777, chunk=100),
                                np.bincount(d[:777], minlength=2))


# -- pipeline -------------------------------------------------------------------------------------
def test_mixture_batches_resume_is_image_and_entry_streams(data_dir):
  c = _config(data_dir, ("mixvid", "miximg:1"))
  run = _take(c, 10)
  draws = mixture.draws(7, [1, 1], 0, 10)
  assert 0 < draws.sum() < 10
  for s, b in enumerate(run):
    src = "miximg" if draws[s] else "mixvid"
    assert _source(b["video"]) == [src] * 4
    np.testing.assert_array_equal(b["is_image"], [bool(draws[s])] * 4)
    assert b["is_image"].dtype == bool
    assert sorted(b) == sorted(tasks.TRAIN_KEYS["retrieval"] + ("is_image",))
    assert b["video"].shape == (4, 4, 16, 16, 3)
  # resume at step 6 == the uninterrupted batches 6..9, every key
  for a, b in zip(_take(c, 4, start_step=6), run[6:]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # entry 0 keeps config.seed: its steps are a plain mixvid run's batches in order
  plain = _take(_config(data_dir), int((draws == 0).sum()))
  assert "is_image" not in plain[0]
  for a, b in zip([r for r, d in zip(run, draws) if d == 0], plain):
    for k in b:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_hosts_draw_the_same_dataset(data_dir):
  c = _config(data_dir, ("mixvid", "miximg:2"))
  hosts = [_take(c, 6, process_index=p, process_count=2) for p in range(2)]
  for s in range(6):
    assert _source(hosts[0][s]["video"]) == _source(hosts[1][s]["video"])
    assert len(set(_source(hosts[0][s]["video"]))) == 1
    assert hosts[0][s]["video"].shape[0] == 2


def test_is_image_only_when_an_image_dataset_trains(data_dir):
  (img,) = _take(_config(data_dir, builder="miximg"), 1)
  assert img["is_image"].tolist() == [True] * 4 and _source(img["video"]) == ["miximg"] * 4
  (vid,) = _take(_config(data_dir), 1)
  assert sorted(vid) == sorted(tasks.TRAIN_KEYS["retrieval"])


def test_augment_per_kind_keeps_shapes_and_images_repeat(data_dir):
  c = _config(data_dir, ("mixvid", "miximg"), resolution=20, crop=16,
              augment="temporal_randaug", image_augment="image_randaug")
  run = _take(c, 6)
  plain = _take(_config(data_dir, ("mixvid", "miximg"), resolution=20, crop=16), 6)
  draws = mixture.draws(7, [1, 1], 0, 6)
  assert set(draws) == {0, 1}
  changed = [not np.allclose(a["video"][i], p["video"][i], atol=1e-3)
             for a, p in zip(run, plain) for i in range(4)]
  assert sum(changed) >= 18          # of 24 rows (a few draw only no-op ops on these frames)
  for a, p, d in zip(run, plain, draws):
    assert a["video"].shape == p["video"].shape == (4, 4, 16, 16, 3)
    assert a["video"].dtype == np.float32
    np.testing.assert_array_equal(a["text_ids"], p["text_ids"])  # texts unchanged
    if d:  # an image: its 4 frames stay identical after RandomResizedCrop + RandomAugment
      assert np.abs(np.diff(a["video"], axis=1)).max() == 0


def test_mixture_needs_retrieval_task(data_dir):
  with pytest.raises(ValueError, match=r"config\.data\.train\.mixture"):
    _take(_config(data_dir, ("mixvid", "miximg"), task="classification"), 1)
