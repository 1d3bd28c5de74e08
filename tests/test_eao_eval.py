"""Everything-at-Once evaluation (spec §6): the 'averaged_ties' protocol against a brute-force
computation and the reference's own metric outputs, averaging over ids, the generic driver's
options (complete_size, average_ids, encode_options), the long-video strategies on tiny arrays,
and vlx.models.eao.tasks on the tiny model against direct model calls."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import fake_family
from tests.conftest import FAST_COMPILE
from vlx import sharding as shd
from vlx.evals import ranking, retrieval
from vlx.models.eao import load_fixture as lf
from vlx.models.eao import model as em
from vlx.models.eao import tasks


# -- the metric ---------------------------------------------------------------------------------
def _brute_force(sim: np.ndarray, gt: np.ndarray, complete: int | None) -> dict[str, float]:
  """Sort each row (descending), rank = mean position of the entries tied with the GT score."""
  ranks = []
  for row, g in zip(sim, gt):
    order = sorted(range(len(row)), key=lambda j: -row[j])
    tied = [pos for pos, j in enumerate(order) if row[j] == row[g]]
    ranks.append(sum(tied) / len(tied))
  ranks = np.asarray(ranks)
  num = complete or len(ranks)
  r = {f"r{k}": 100.0 * np.sum(ranks < k) / num for k in (1, 5, 10, 50)}
  r["medr"], r["meanr"] = float(np.median(ranks) + 1), float(np.mean(ranks) + 1)
  r["geomean"] = float(np.prod([r["r1"], r["r5"], r["r10"]]) ** (1 / 3))
  return r


@pytest.mark.parametrize("complete", [None, 40])
def test_averaged_ties_matches_brute_force(complete):
  rs = np.random.RandomState(3)
  sim = np.round(rs.rand(30, 30), 1)          # values in 0.0 .. 1.0: many exact ties
  gt = rs.permutation(30)
  sim[np.arange(30), gt] += np.round(rs.rand(30) * 0.3, 1)   # GT a little higher on average
  ours = ranking.averaged_ties_metrics(sim, gt, complete)
  want = _brute_force(sim, gt, complete)
  assert set(ours) == set(want)
  for k, v in want.items():
    assert ours[k] == pytest.approx(v, rel=1e-12), k
  assert 0 < ours["r1"] < ours["r10"] < 100 * 30 / (complete or 30)   # ties did matter
  with pytest.raises(ValueError, match="complete_size"):
    ranking.averaged_ties_metrics(sim, gt, 29)


def test_reference_metric_outputs(reference_dir):
  """The reference's retrieval_metrics on its tied 16x16 matrix (plain and complete size 20)."""
  d = reference_dir / "eao" / "tiny"
  sims = np.load(d / "inputs.npz")["metric_test_sims"]
  out = np.load(d / "outputs.npz")
  np.testing.assert_array_equal(ranking.diagonal_metrics(sims), out["metric_test_ties"])
  np.testing.assert_array_equal(ranking.diagonal_metrics(sims, 20),
                                out["metric_test_ties_completesize20"])


def test_average_by_id_sorted_groups_and_dropped_rows():
  x = np.arange(12, dtype=np.float32).reshape(6, 2)
  tree = {"a": x, "b": x[:, 0]}
  out, ids = ranking.average_by_id(tree, [7, -1, 3, 7, 3, 7])
  assert ids.tolist() == [3, 7]
  np.testing.assert_allclose(out["a"], [x[[2, 4]].mean(0), x[[0, 3, 5]].mean(0)])
  assert out["a"].dtype == np.float32 and out["b"].shape == (2,)


# -- the generic driver ----------------------------------------------------------------------------
def _toy_eval(num_rows: int = 10):
  """An eval over `num_rows` clip rows; clips 2i and 2i+1 share group i; features chosen so that
  averaging changes the ranking."""
  rs = np.random.RandomState(0)
  video = rs.randn(num_rows, 4).astype(np.float32)
  text = (video + 1.5 * rs.randn(num_rows, 4)).astype(np.float32)

  def batches(eval_cfg, config, *, batch_size):
    for start in range(0, num_rows, batch_size):
      idx = np.arange(start, start + batch_size)
      ok = idx < num_rows
      idx = np.where(ok, idx, 0)
      yield dict(vec=video[idx], tvec=text[idx], valid=ok,
                 video_index=np.where(ok, idx, -1).astype(np.int32))

  def enc_v(model, b, scale=1.0):
    return dict(feat=b["vec"] * scale, group=b["video_index"] // 2)

  def enc_t(model, b, scale=1.0):
    return dict(feat=b["tvec"], group=b["video_index"] // 2)

  fam = fake_family.scorer_family(
      "toy_avg", encode_videos=enc_v, encode_texts=enc_t, retrieval_modes=("dot",),
      retrieval_scores=lambda m, t, v, *, mode: t["feat"] @ v["feat"].T)
  return fam, batches, video, text


def test_driver_average_ids_complete_size_and_encode_options():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  model = fake_family.build(c.model, rngs=nnx.Rngs(params=0))
  fam, batches, video, text = _toy_eval()
  ev = ml_collections.ConfigDict(dict(type="retrieval", builder="toy", split="test",
                                      batch_size=4, mode="dot", protocol="averaged_ties",
                                      average_ids="group", complete_size=7,
                                      encode_options=dict(scale=2.0)))
  with jax.set_mesh(mesh):
    m = retrieval.run_retrieval_eval(model, fam, ev, c, mesh, make_eval_batches=batches)
  g_v, g_t = video.reshape(5, 2, 4).mean(1) * 2.0, text.reshape(5, 2, 4).mean(1)
  want = ranking.averaged_ties_metrics(g_t @ g_v.T, np.arange(5), 7)
  assert m["num_videos"] == 5 and m["num_texts"] == 5
  for k, v in want.items():
    assert m[k] == pytest.approx(v, rel=1e-5), k
  ev.encode_options = dict(scale=2.0, depth=3)
  with pytest.raises(ValueError, match="encode_options.depth: family 'toy_avg'"):
    with jax.set_mesh(mesh):
      retrieval.run_retrieval_eval(model, fam, ev, c, mesh, make_eval_batches=batches)
  ev.encode_options = dict(scale=2.0)
  ev.complete_size = 0                               # 0: the 5 queries present
  ev.protocol = "tie_aware"
  with pytest.raises(ValueError, match=r"complete_size needs protocol .*, not 'tie_aware'"):
    with jax.set_mesh(mesh):
      retrieval.run_retrieval_eval(model, fam, ev, c, mesh, make_eval_batches=batches)
  ev.protocol, ev.average_ids = "averaged_ties", "nope"
  with pytest.raises(ValueError, match="average_ids='nope'"):
    with jax.set_mesh(mesh):
      retrieval.run_retrieval_eval(model, fam, ev, c, mesh, make_eval_batches=batches)


def test_complete_size_field_and_dataset_metadata(monkeypatch):
  """The field wins (0 = the present queries); absent: the dataset's metadata 'complete_size'
  (int or {split: int}) for a split read whole, never for a slice or without the pipeline."""
  import types
  from vlx.data import pipeline
  meta = {"complete_size": {"test": 1000}}
  monkeypatch.setattr(pipeline, "get_builder", lambda *a: types.SimpleNamespace(
      info=types.SimpleNamespace(metadata=meta)))
  c = fake_family.toy_config()
  ev = ml_collections.ConfigDict(dict(builder="toy", split="test"))
  assert retrieval.complete_size(ev, c) == 1000
  assert retrieval.complete_size(ev, c, from_dataset=False) is None
  ev.split = "test[:100]"
  assert retrieval.complete_size(ev, c) is None
  ev.split, meta["complete_size"] = "val", 3350
  assert retrieval.complete_size(ev, c) == 3350
  ev.complete_size = 0
  assert retrieval.complete_size(ev, c) is None
  ev.complete_size = 7
  assert retrieval.complete_size(ev, c) == 7


# -- long-video strategies -----------------------------------------------------------------------
def test_long_video_options():
  assert tasks.long_video_options("at_once") == {}
  assert tasks.long_video_options("clips", 6) == dict(clips=6, clip_tokens=12, clip_frames=768,
                                                       clip_min_audio=0.7)
  assert tasks.long_video_options("max")["audio_pooling"] == "max_pool"
  assert tasks.long_video_options("nearest") == dict(audio_max_tokens=12, audio_pooling="nearest")
  with pytest.raises(ValueError, match="long-video strategy"):
    tasks.long_video_options("middle")


def test_cut_clips_layout_and_audio_rule():
  """2 clips of 3 tokens / 8 frames; rows with nframes 16, 10, 14, 8 keep clip 1 when more than
  0.7 * 8 frames remain (8, 2, 6, 0 remain): the fixture's clips_ids pattern."""
  b, d, mel = 4, 2, 3
  video = np.arange(b * 5 * d, dtype=np.float32).reshape(b, 5, d)     # 5 tokens -> padded to 6
  audio = np.arange(b * mel * 16, dtype=np.float32).reshape(b, mel, 16)
  nframes = np.asarray([16, 10, 14, 8])
  x = dict(text=np.ones((b, 2, 1), np.float32), text_mask=np.ones((b, 2), np.int32),
           video=video, video_mask=np.ones((b, 5), np.int32), audio=audio,
           audio_mask=(np.arange(16)[None] < nframes[:, None]).astype(np.int32),
           audio_STFT_nframes=nframes)
  out, kept = tasks.cut_clips({k: jnp.asarray(v) for k, v in x.items()}, 2, 3, 8, 0.7)
  assert np.asarray(kept).tolist() == [[True, True], [True, False], [True, True], [True, False]]
  np.testing.assert_array_equal(out["video"][2], video[1, :3])
  np.testing.assert_array_equal(out["video"][3, :2], video[1, 3:])
  assert not np.asarray(out["video"][3, 2]).any() and out["video_mask"][3].tolist() == [1, 1, 0]
  np.testing.assert_array_equal(out["audio"][5], audio[2, :, 8:])
  assert np.asarray(out["audio_mask"][5]).sum() == 6 and out["text"].shape == (8, 2, 1)


# -- tasks on the tiny model ---------------------------------------------------------------------
def _batch(b: int = 4, frames: int = 128) -> dict[str, np.ndarray]:
  """A pipeline-layout batch (audio time first) with an empty text and short audio rows."""
  r = np.random.default_rng(0)
  text_mask = np.ones((b, 5), np.int32)
  text_mask[1] = 0
  video_mask = np.ones((b, 4), np.int32)
  video_mask[2, 2:] = 0
  nframes = np.asarray([frames, 50, frames, 100][:b], np.int32)
  audio_mask = (np.arange(frames)[None] < nframes[:, None]).astype(np.int32)
  return dict(text=r.normal(size=(b, 5, 32)).astype(np.float32), text_mask=text_mask,
              video=r.normal(size=(b, 4, 48)).astype(np.float32), video_mask=video_mask,
              audio=r.normal(size=(b, frames, 40)).astype(np.float32), audio_mask=audio_mask,
              audio_STFT_nframes=nframes)


@pytest.fixture(scope="module")
def tiny_run():
  """One compiled run: the tasks functions (plain and with audio pooling) and the direct model
  calls they must reproduce."""
  cfg = em.model_config("tiny")
  cfg.depth = 1
  pool_opts = dict(audio_max_tokens=1, audio_pooling="max_pool")

  def run(batch):
    model = em.build(cfg, rngs=nnx.Rngs(0))
    texts, videos = tasks.encode_texts(model, batch), tasks.encode_videos(model, batch)
    scores = {m: tasks.retrieval_scores(model, texts, videos, mode=m)
              for m in tasks.RETRIEVAL_MODES}
    x = dict(batch, audio=jnp.swapaxes(batch["audio"], 1, 2))
    direct = model(x, force_cross_modal=True)
    pooled = tasks.encode_videos(model, batch, **pool_opts)
    va = {k: x[k] for k in ("video", "video_mask", "audio", "audio_mask", "audio_STFT_nframes")}
    direct_pooled = model(va, force_cross_modal=True, audio_max_tokens=1,
                          audio_pooling="max_pool")
    return texts, videos, scores, direct, pooled, direct_pooled

  return jax.jit(run, compiler_options=FAST_COMPILE)(_batch())


def _cos(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
  return a @ b.T


def test_scores_are_cosines_of_the_direct_model_call(tiny_run):
  texts, videos, scores, direct, *_ = tiny_run
  assert sorted(texts) == sorted(tasks.TEXT_ROW) and sorted(videos) == sorted(tasks.VIDEO_ROW)
  np.testing.assert_allclose(scores["t2va"], _cos(direct["text_embed"], direct["va_embed"]),
                             atol=1e-5)
  np.testing.assert_allclose(scores["t2v"], _cos(direct["text_embed"], direct["video_embed"]),
                             atol=1e-5)
  np.testing.assert_allclose(scores["a2tv"], _cos(direct["audio_embed"], direct["tv_embed"]),
                             atol=1e-5)
  np.testing.assert_allclose(scores["t+v2a"], _cos(direct["t+v_embed"], direct["audio_embed"]),
                             atol=1e-5)
  np.testing.assert_allclose(scores["v2t"], np.asarray(scores["t2v"]).T, atol=1e-6)
  assert not np.allclose(scores["t2va"], scores["t2v"])


def _raw_clip_rows(x) -> dict[str, np.ndarray]:
  """The fixture's raw clip-wise videos read at once (model layout): 12 video tokens ('clip'
  sampling of the 2D/3D features) and 768 audio frames per video."""
  rows = {k: [] for k in ("video", "video_mask", "audio", "audio_mask", "audio_STFT_nframes")}
  for i in range(len(x["clips_ids"]) // 2):
    v, m = lf.video_features(x[f"clips_raw{i}_feat_2d"], x[f"clips_raw{i}_feat_3d"], 12, "clip")
    mel = x[f"clips_raw{i}_mel"]
    n = min(mel.shape[1], 768)
    a = np.zeros((mel.shape[0], 768), np.float32)
    a[:, :n] = mel[:, :n]
    for k, val in zip(rows, (v, m, a, (np.arange(768) < n).astype(np.float32), n)):
      rows[k].append(val)
  return {k: np.stack(v) for k, v in rows.items()}


def test_clip_cutting_matches_the_reference_clips(reference_dir):
  """The fixture's clip-wise rows (configs/evaluation/*_clips.yaml, 2 clips x 6 tokens / 384
  frames): cutting each raw video's 12 tokens / 768 frames gives its clips_video / clips_audio
  rows and masks, and the kept clips are those whose id is not '-1'."""
  x = np.load(reference_dir / "eao" / "tiny" / "inputs.npz")
  rows = _raw_clip_rows(x)
  out, kept = tasks.cut_clips({k: jnp.asarray(v) for k, v in rows.items()},
                              2, 6, 384, 0.7)
  for k in ("video", "video_mask", "audio", "audio_mask"):
    np.testing.assert_allclose(out[k], x["clips_" + k], atol=1e-6, err_msg=k)
  assert np.asarray(kept).reshape(-1).tolist() == (x["clips_ids"] != "-1").tolist()


def test_audio_pooling_option(tiny_run):
  """encode_options audio_max_tokens / audio_pooling reach the model (embeddings of the tiny
  random model are ~1e-4: compared relative to their scale)."""
  _, videos, _, _, pooled, direct_pooled = tiny_run
  scale = float(np.abs(direct_pooled["audio_embed"]).max())
  assert np.abs(np.asarray(pooled["a"]) - videos["a"]).max() > 0.1 * scale   # pooling changed it
  for short, name in (("a", "audio_embed"), ("va", "va_embed"), ("v+a", "v+a_embed")):
    ref = np.asarray(direct_pooled[name])
    np.testing.assert_allclose(pooled[short], ref, atol=1e-4 * np.abs(ref).max(), err_msg=short)


def test_clip_query_modes_need_one_caption_per_clip():
  t = {"t": jnp.ones((3, 4))}
  v = {"v": jnp.ones((2, 4)), "a": jnp.ones((2, 4))}
  assert tasks.retrieval_scores(None, t, v, mode="t2v").shape == (3, 2)
  with pytest.raises(ValueError, match="one caption per clip"):
    tasks.retrieval_scores(None, t, v, mode="v2t")
  with pytest.raises(ValueError, match="'va' embedding"):
    tasks.retrieval_scores(None, t, v, mode="t2va")
  with pytest.raises(ValueError, match="expected one of"):
    tasks.retrieval_scores(None, t, v, mode="vtc")


@pytest.mark.torch   # reads the reference .pth container
def test_tasks_reproduce_the_reference_evaluation(reference_dir):
  """The tiny fixture's eval outputs through tasks.py on the converted checkpoint: every sim_* of
  the main batch with its metrics (plain and complete size B + 2) exactly, and the clip-wise
  evaluation (encode_options clips=2 x 6 tokens / 384 frames on each raw video's 12 tokens / 768
  frames) against clips_averaged_*, clips_sim_* and clips_metrics_*."""
  d = reference_dir / "eao" / "tiny"
  model = lf.convert_fixture(d, json.loads((d / "config.json").read_text()))[0].model
  x, ref = dict(np.load(d / "inputs.npz")), dict(np.load(d / "outputs.npz"))
  main = {k: x[k] for k in lf.BATCH_KEYS}
  main["audio"] = np.swapaxes(main["audio"], 1, 2)                 # pipeline layout: time first
  clip = _raw_clip_rows(x)
  clip["audio"] = np.swapaxes(clip["audio"], 1, 2)
  clip["text"], clip["text_mask"] = x["clips_text"][::2], x["clips_text_mask"][::2]
  opts = dict(clips=2, clip_tokens=6, clip_frames=384, clip_min_audio=0.7)
  graphdef, state = nnx.split(model)

  def run(st, b, cb):
    m = nnx.merge(graphdef, st)
    out = []
    for batch, o in ((b, {}), (cb, opts)):
      t, v = tasks.encode_texts(m, batch, **o), tasks.encode_videos(m, batch, **o)
      out.append((t, v, {md: tasks.retrieval_scores(m, t, v, mode=md)
                         for md in tasks.RETRIEVAL_MODES}))
    return out
  with jax.default_matmul_precision("highest"):
    (_, _, sims), (ct, cv, csims) = jax.jit(run, compiler_options=FAST_COMPILE)(state, main, clip)
  b = len(x["text"])
  for md in tasks.RETRIEVAL_MODES:
    if f"sim_{md}" in ref:
      np.testing.assert_allclose(sims[md], ref[f"sim_{md}"], atol=1e-5, err_msg=md)
    np.testing.assert_array_equal(ranking.diagonal_metrics(np.asarray(sims[md])),
                                  ref[f"metrics_{md}"], err_msg=md)
    if f"metrics_completesize_{md}" in ref:
      np.testing.assert_array_equal(ranking.diagonal_metrics(np.asarray(sims[md]), b + 2),
                                    ref[f"metrics_completesize_{md}"], err_msg=md)
    if f"clips_sim_{md}" in ref:
      np.testing.assert_allclose(csims[md], ref[f"clips_sim_{md}"], atol=1e-5, err_msg=md)
    if f"clips_metrics_{md}" in ref:
      np.testing.assert_array_equal(ranking.diagonal_metrics(np.asarray(csims[md])),
                                    ref[f"clips_metrics_{md}"], err_msg=md)
  names = {"t": "text", "v": "video", "a": "audio"}
  for k, v in {**ct, **cv}.items():
    np.testing.assert_allclose(v, ref[f"clips_averaged_{names.get(k, k)}_embed"], atol=1e-5,
                               err_msg=k)
