"""EAO family wiring: the tiny pre-training run through the loop (six pair losses, t2v / t2va
retrieval evals), DAVEnet's BatchNorm running statistics carried out of the jitted step, the
model-input adapter (frozen word-vector table, CLIP text tower, audio layout), the frozen front
ends filled by prepare_fresh_state, and the colour-free frame_features reader."""
import io
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from flax import nnx
from PIL import Image

from configs import eao_pretrain
from conftest import FAST_COMPILE, _fast_jit
from vlx import registry, steps, train
from vlx import sharding as shd
from vlx.logging_utils import read_metrics
from vlx.models.eao import inputs
from vlx.models.eao import losses
from vlx.models.eao import model as em

PAIRS = ("tv", "ta", "va", "t_va", "v_ta", "a_tv")
CLIP_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "clip_tiny")


def _tiny_config(data_dir: str) -> ml_collections.ConfigDict:
  c = eao_pretrain.get_config("tiny")
  c.data.data_dir = data_dir
  return c


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory):
  """configs/eao_pretrain.py:tiny trained 2 steps and evaluated (8 simulated devices)."""
  c = _tiny_config(tiny_data_dir)
  work = str(tmp_path_factory.mktemp("eao_pretrain") / "w")
  out = train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE)
  return c, work, out


def test_family_objective_names_match_the_losses_module():
  fam = registry.get("eao")
  assert fam.objective_names == losses.OBJECTIVES == PAIRS
  assert fam.frozen_params == inputs.FROZEN_PARAMS
  assert {"t2v", "t2va"} <= set(fam.retrieval_modes)


def test_tiny_pretraining_logs_six_pair_losses_and_retrieval_evals(tiny_run):
  c, work, out = tiny_run
  rows = read_metrics(work)
  weights = dict(c.objectives)
  for step in (1, 2):
    r = rows[step]
    for p in PAIRS:
      assert np.isfinite(r[f"train/{p}_loss"]) and r[f"train/{p}_loss"] > 0, (step, p)
    total = sum(weights[p] * r[f"train/{p}_loss"] for p in PAIRS)
    assert abs(r["train/loss"] - total) < 1e-4 * total
  np.testing.assert_allclose(sum(weights.values()), 1.0)     # w / Σw as the reference
  for mode in ("t2v", "t2va"):
    for k in ("r1", "r5", "r10", "medr", "meanr"):
      assert np.isfinite(out[f"eval/test_{mode}/{k}"]), (mode, k)
    assert out[f"eval/test_{mode}/num_videos"] == 16      # moving_shapes/tiny test split


def test_train_step_carries_batchnorm_statistics_and_keeps_word_vectors(tiny_run):
  """One step of the loop's (cached) program: DAVEnet's running mean becomes 0.9 * 0 + 0.1 *
  the batch mean (torch momentum 0.1); dropping the BatchStat updates leaves it 0."""
  c, _, _ = tiny_run
  config = shd.resolve_strategy(c)
  fam = registry.get("eao")
  mesh = shd.make_mesh(config.mesh)
  prog = steps.program(fam, config, mesh, FAST_COMPILE)     # the tiny run's program
  from vlx.data.train_stream import make_train_iterator  # pylint: disable=import-outside-toplevel
  with jax.set_mesh(mesh), shd.use_rules(tuple(config.mesh.rules)):
    batch = next(iter(make_train_iterator(config, mesh, start_step=0)))   # as the loop's
    state = prog.init()
    model = nnx.merge(prog.graphdef, state["params"], state["other"])
    audio = np.asarray(batch["audio"])                     # [B, T, mel]: conv1 is channels-last
    conv1 = np.asarray(model.davenet.conv1(jnp.asarray(audio)))
    before_mean = np.asarray(model.davenet.bn1.mean[...])
    table = np.asarray(model.word_vectors.table[...])
    new, metrics = prog.train_step(state, batch)
  after = nnx.merge(prog.graphdef, new["params"], new["other"])
  np.testing.assert_array_equal(before_mean, 0.0)
  np.testing.assert_allclose(np.asarray(after.davenet.bn1.mean[...]),
                             0.1 * conv1.mean(axis=(0, 1)), rtol=1e-4, atol=1e-6)
  assert not np.allclose(np.asarray(after.davenet.stages[0][0].bn1.var[...]), 1.0)
  np.testing.assert_array_equal(np.asarray(after.word_vectors.table[...]), table)   # frozen
  assert np.isfinite(float(metrics["loss"]))


def _model(fast_build, **overrides):
  cfg = eao_pretrain.get_config("tiny").model
  cfg.update(overrides)
  return fast_build(lambda: em.build(cfg, rngs=nnx.Rngs(0))), cfg


def test_model_inputs_word_vectors_audio_layout_and_passthrough(fast_build):
  model, cfg = _model(fast_build)
  table = np.asarray(model.word_vectors.table[...])
  assert table.shape == (cfg.word_vocab_size + 1, cfg.text_dim)
  np.testing.assert_array_equal(table[0], 0.0)
  ids = np.array([[5, 7, 0], [3, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  audio = np.arange(2 * 6 * 40, dtype=np.float32).reshape(2, 6, 40)
  out = inputs.model_inputs(model, {"text_ids": ids, "text_mask": mask, "audio": audio,
                                    "audio_mask": np.ones((2, 6), np.int32)})
  np.testing.assert_array_equal(np.asarray(out["text"]), table[ids] * mask[..., None])
  np.testing.assert_array_equal(np.asarray(out["audio"]), audio.transpose(0, 2, 1))
  assert set(out) == {"text", "text_mask", "audio", "audio_mask"}
  text = np.ones((2, 3, cfg.text_dim), np.float32)
  out = inputs.model_inputs(model, {"text": text, "text_mask": mask, "text_ids": ids})
  assert out["text"] is text                     # float text passes through
  plain, _ = _model(fast_build, text_input="features")
  assert plain.word_vectors is None and plain.clip_text is None
  with pytest.raises(ValueError, match="text_input='features'"):
    inputs.model_inputs(plain, {"text_ids": ids, "text_mask": mask})
  with pytest.raises(ValueError, match="expected features"):
    inputs.model_inputs(plain, {"video": np.zeros((2, 3, 4, 4, 3), np.float32)})


def test_prepare_fresh_state_fills_the_word_vectors(tmp_path, fast_build):
  model, cfg = _model(fast_build, random_word_vectors=False)
  vectors = np.random.default_rng(1).standard_normal((cfg.word_vocab_size, cfg.text_dim))
  np.save(tmp_path / "vectors.npy", vectors.astype(np.float32))
  config = ml_collections.ConfigDict(dict(model=cfg, init=dict(word_vectors=str(tmp_path))))
  inputs.prepare_fresh_state(model, config)
  table = np.asarray(model.word_vectors.table[...])
  np.testing.assert_array_equal(table[0], 0.0)
  np.testing.assert_allclose(table[1:], vectors, rtol=1e-6)
  np.save(tmp_path / "vectors.npy", vectors[:-1].astype(np.float32))
  with pytest.raises(ValueError, match="word_vocab_size"):
    inputs.prepare_fresh_state(model, config)
  config.init.word_vectors = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="vlx.data.word2vec"):
    inputs.prepare_fresh_state(model, config)
  config.init.word_vectors = ""
  with pytest.raises(ValueError, match="init.word_vectors"):
    inputs.prepare_fresh_state(model, config)


def test_clip_text_tower_is_filled_and_gives_word_features(fast_build):
  from vlx.layers import clip, clip_rules  # pylint: disable=import-outside-toplevel
  sizes = dict(embed_dim=24, context_length=16, vocab_size=200, text_width=32, text_layers=2,
               text_heads=2, text_mlp_dim=128, activation="quick_gelu")
  model, cfg = _model(fast_build, text_input="clip", text_dim=24, clip=sizes, clip_max_words=5)
  path = os.path.join(CLIP_FIXTURE, "checkpoint.pt")
  config = ml_collections.ConfigDict(dict(model=cfg, init=dict(clip=path)))
  inputs.prepare_fresh_state(model, config)
  ref = clip_rules.load(clip_rules.read_checkpoint(path), variant="openai", head_width=16)
  ids = np.array([[1, 5, 9, 199, 0, 0], [1, 199, 0, 0, 0, 0]], np.int32)   # SOT ... EOT
  out = _fast_jit(inputs.model_inputs)(model, {"text_ids": ids,
                                                "text_mask": (ids > 0).astype(np.int32)})
  want, want_mask = _fast_jit(lambda t, i: clip.word_features(t, i, 5))(ref.text, ids)
  np.testing.assert_allclose(np.asarray(out["text"]), np.asarray(want), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out["text_mask"]), [[1, 1, 0, 0, 0], [0] * 5])
  np.testing.assert_array_equal(np.asarray(want_mask), np.asarray(out["text_mask"]))


def _png(frame: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="PNG")
  return buf.getvalue()


def test_frame_features_are_deterministic_and_colour_free():
  from vlx.data import modalities  # pylint: disable=import-outside-toplevel
  reader = modalities.make_reader("frame_features", ml_collections.ConfigDict(dict(
      num_frames=3, resolution=16, grid=4, dim=10, sampling="")), "test")

  def clip(colour, shift=0):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for t in range(4):
      frames[t, 4 + 3 * t + shift:12 + 3 * t + shift, 8:16] = colour
    return tf.constant([_png(f) for f in frames])

  seed = tf.constant([1, 2], tf.int64)
  red = reader.read(clip((230, 20, 20)), seed, train=False)
  blue = reader.read(clip((30, 60, 255)), seed, train=False)
  moved = reader.read(clip((230, 20, 20), shift=6), seed, train=False)
  assert red["video"].shape == (3, 10) and red["video_mask"].numpy().tolist() == [1, 1, 1]
  np.testing.assert_array_equal(red["video"].numpy(), blue["video"].numpy())
  assert not np.allclose(red["video"].numpy(), moved["video"].numpy())
  np.testing.assert_array_equal(reader.read(clip((230, 20, 20)), seed, train=False)["video"],
                                red["video"])


def test_exponential_schedule_decays_per_epoch():
  """ExponentialLR(gamma) stepped once per epoch of `transition_steps` optimizer steps."""
  from vlx import optim  # pylint: disable=import-outside-toplevel
  o = eao_pretrain.get_config("demo").optim
  sched = optim.make_schedule(o, 500)
  lr, n = o.lr, o.schedule.transition_steps
  np.testing.assert_allclose([float(sched(s)) for s in (0, n - 1, n, 2 * n + 5)],
                             [lr, lr, lr * 0.9, lr * 0.81], rtol=1e-6)


def test_validate_config_names_an_audio_length_off_the_davenet_stride():
  fam = registry.get("eao")
  c = eao_pretrain.get_config("demo")
  fam.validate_config(c)
  c.evals.test_t2va.inputs.audio.seconds = 1.0          # 100 frames, stride 8
  with pytest.raises(ValueError, match=r"config.evals.test_t2va.inputs.audio gives 100 "):
    fam.validate_config(c)


def test_own_videos_read_clip_features_at_paper_size_and_frames_in_the_demo():
  from configs import eao_msrvtt_ret  # pylint: disable=import-outside-toplevel
  c = eao_msrvtt_ret.get_config("clip,own")
  for block in [c.data.train] + list(c.evals.values()):
    assert block.builder == "video_text_clip" and block.builder_config == "captions"
    assert block.inputs.video.feature == "clip_features" and block.inputs.video.dim == 512
    assert "audio" not in block.inputs
  assert dict(c.objectives) == {"tv": 1.0} and list(c.evals) == ["video_text_t2v"]
  demo = eao_msrvtt_ret.get_config("demo,own")
  assert demo.data.train.builder == "video_text"
  assert demo.data.train.inputs.video.reader == "frame_features"
  with pytest.raises(ValueError, match="use the CLIP variant"):
    eao_msrvtt_ret.get_config("own")


def test_own_videos_with_their_audio_track_train_tri_modally(tmp_path):
  """video_text 'captions_audio' stores each video's audio track (16 kHz PCM; empty without
  one); `:tiny,own,audio` reads it as a log-mel spectrogram and trains / evaluates t2v and t2va."""
  import csv  # pylint: disable=import-outside-toplevel
  from configs import eao_msrvtt_ret  # pylint: disable=import-outside-toplevel
  from vlx.data import builder_base, pipeline, testing  # pylint: disable=import-outside-toplevel
  manual, data_dir = tmp_path / "MY", tmp_path / "D"
  rows = []
  for i in range(12):
    path = f"v{i}.mkv" if i % 4 else f"v{i}.mp4"     # every 4th video has no audio track
    tone = np.sin(2 * np.pi * (300 + 50 * i) * np.arange(16000) / 16000).astype(np.float32)
    if i % 4:
      testing.write_video_with_audio(manual / path, 0.5 * tone, 16000, num_frames=8, fps=8,
                                     height=32, width=32, seed=i)
    else:
      testing.write_video(manual / path, num_frames=8, fps=8, height=32, width=32, seed=i)
    rows.append((path, f"a square moves left {i}", "train" if i < 8 else "val"))
  with open(manual / "video_text.csv", "w", newline="") as f:
    csv.writer(f).writerows([("video", "caption", "split"), *rows])
  with testing.environ(**{builder_base.REPORT_ENV: str(tmp_path / "reports")}):
    b = pipeline.build("video_text", "captions_audio", str(data_dir), manual_dir=str(manual))
  stored = {e["video_id"].decode(): e["audio"] for e in
            tfds.as_numpy(b.as_dataset(split="train"))}
  assert stored["v0"].shape == (0,) and stored["v1"].dtype == np.int16
  assert stored["v1"].shape[0] == pytest.approx(16000, abs=400)   # 1 s of the track
  c = eao_msrvtt_ret.get_config("tiny,own,audio")
  c.data.data_dir = str(data_dir)
  work = str(tmp_path / "W")
  out = train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE)
  rows_ = read_metrics(work)
  nonempty = [r["train/audio_nonempty"] for r in rows_.values() if "train/audio_nonempty" in r]
  assert nonempty and all(0.0 < x < 1.0 for x in nonempty)   # 6 of the 8 train clips have audio
  for mode in ("t2v", "t2va"):
    assert out[f"eval/video_text_{mode}/num_videos"] == 4
