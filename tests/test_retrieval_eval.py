"""Retrieval metrics against the ALPRO reference fixture and hand-computed cases; eval driver."""
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import fake_family
from vlx import sharding as shd
from vlx.evals import retrieval


def test_matches_alpro_reference_fixture(reference_dir):
  out = np.load(reference_dir / "alpro" / "tiny" / "outputs.npz")
  scores = out["ret_score_matrix"]                     # (Nv, Nt); video i is the GT of text i
  m = retrieval.retrieval_metrics(scores.T, np.arange(scores.shape[1]), decimals=4)
  names = {"r1": "r1", "r5": "r5", "r10": "r10", "medr": "medianR", "meanr": "meanR"}
  for ours, ref in names.items():
    assert np.float32(m[ours]) == out[f"ret_metric/text2video/{ref}"], ours
    assert np.float32(m[f"v2t/{ours}"]) == out[f"ret_metric/video2text/{ref}"], ours


def test_hand_computed_ranks_ties_and_rounding():
  sim = np.array([[0.9, 0.1, 0.5],        # text 0 -> GT video 0 at rank 0
                  [0.3, 0.2, 0.1],        # text 1 -> GT video 1 at rank 1
                  [0.70001, 0.7, 0.1]])   # text 2 -> GT video 2 at rank 2
  m = retrieval.retrieval_metrics(sim, [0, 1, 2])
  assert m["r1"] == pytest.approx(100 / 3) and (m["medr"], m["meanr"]) == (2.0, 2.0)
  assert m["r5"] == 100.0
  # rounding to 4 decimals ties both scores; the stable sort keeps index order.
  tie = np.array([[0.50004, 0.50001]])
  assert retrieval.retrieval_metrics(tie, [1])["r1"] == 0.0
  assert retrieval.retrieval_metrics(tie, [1], decimals=None)["r1"] == 0.0
  assert retrieval.retrieval_metrics(tie[:, ::-1], [0], decimals=4)["r1"] == 100.0
  assert retrieval.retrieval_metrics(tie[:, ::-1], [0], decimals=None)["r1"] == 0.0


def test_video_to_text_uses_last_caption_of_each_video():
  sim = np.array([[0.9, 0.0],   # caption 0 of video 0
                  [0.1, 0.0],   # caption 1 of video 0 (the GT for video->text)
                  [0.0, 0.8]])  # caption 0 of video 1
  m = retrieval.retrieval_metrics(sim, [0, 0, 1])
  assert m["r1"] == 100.0
  assert m["v2t/r1"] == 50.0 and m["v2t/meanr"] == 1.5


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match="Nt, Nv"):
    retrieval.retrieval_metrics(np.zeros((3, 2)), [0, 1])
  with pytest.raises(ValueError, match="outside"):
    retrieval.retrieval_metrics(np.zeros((2, 2)), [0, 2])


def test_run_retrieval_eval_drops_padding_and_counts_videos():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  model = fake_family.build(c.model, rngs=nnx.Rngs(params=0))
  ev = c.evals.toy_test
  with jax.set_mesh(mesh):
    m = retrieval.run_retrieval_eval(model, fake_family.FAMILY, ev, c, mesh,
                                     make_eval_batches=fake_family.make_eval_batches)
  assert m["num_videos"] == 20 and m["num_texts"] == 20      # 3 batches of 8, last one padded
  # Recompute directly from the features of the 20 real rows.
  full = fake_family.synthetic_batch(10 ** 6, 20, c, seed=7)
  sim = np.asarray(fake_family.encode_texts(model, full)["feat"]
                   @ fake_family.encode_videos(model, full)["feat"].T)
  want = retrieval.retrieval_metrics(sim, np.arange(20))
  for k, v in want.items():
    assert m[k] == pytest.approx(v), k
  assert isinstance(ml_collections.ConfigDict(m), ml_collections.ConfigDict)


def _noisy_view(video: np.ndarray, view: int, index: np.ndarray) -> np.ndarray:
  """Another 'sampling' of each clip: noise fixed by (view, clip index)."""
  noise = [np.random.RandomState(view * 1000 + int(i) % 1000).randn(*video.shape[1:])
           for i in index]
  return video + 0.3 * np.stack(noise).astype(np.float32)


def test_num_views_average_the_similarity_of_random_views():
  """num_views=3 (All-in-one's retrieval_views): one encode per view (field `view` = 0, 1, 2
  reaches the batches), the score matrices averaged before ranking."""
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  model = fake_family.build(c.model, rngs=nnx.Rngs(params=0))
  ev = ml_collections.ConfigDict(c.evals.toy_test.to_dict())
  ev.update(num_views=3, sampling="rand")
  seen = []

  def batches(eval_cfg, config, *, batch_size):
    seen.append(eval_cfg.view)
    for rows in fake_family.make_eval_batches(eval_cfg, config, batch_size=batch_size):
      yield dict(rows, video=_noisy_view(rows["video"], eval_cfg.view, rows["video_index"]))

  with jax.set_mesh(mesh):
    m = retrieval.run_retrieval_eval(model, fake_family.FAMILY, ev, c, mesh, make_eval_batches=batches)
  assert seen == [0, 1, 2]
  full = fake_family.synthetic_batch(10 ** 6, 20, c, seed=7)
  t = np.asarray(fake_family.encode_texts(model, full)["feat"])
  sims = [t @ np.asarray(fake_family.encode_videos(
      model, dict(full, video=_noisy_view(full["video"], v, np.arange(20))))["feat"]).T
          for v in range(3)]
  want = retrieval.retrieval_metrics(np.mean(sims, 0), np.arange(20))
  single = retrieval.retrieval_metrics(sims[0], np.arange(20))
  assert want != single   # the views matter for this toy, so the check below can fail
  for k, v in want.items():
    assert m[k] == pytest.approx(v), k
  ev.sampling = "uniform"
  with pytest.raises(ValueError, match="num_views=3 averages random samplings"):
    retrieval.view_configs(ev)


@pytest.mark.parametrize("fixture", ["tiny", "tiny/distilled"])
def test_tie_aware_protocol_matches_allinone_reference_fixture(reference_dir, fixture):
  """protocol 'tie_aware' = the All-in-one reference's t2v_metrics / v2t_metrics on its own
  similarity."""
  out = np.load(reference_dir / "allinone" / fixture / "outputs.npz")
  m = retrieval.tie_aware_metrics(out["itc_sim_t2v"], np.arange(len(out["itc_sim_t2v"])))
  keys = ("r1", "r5", "r10", "medr", "meanr")
  np.testing.assert_allclose([m[k] for k in keys], out["itc_metrics_t2v"][[0, 1, 2, 4, 5]],
                             rtol=1e-6)
  np.testing.assert_allclose([m[f"v2t/{k}"] for k in keys],
                             out["itc_metrics_v2t"][[0, 1, 2, 4, 5]], rtol=1e-6)


def test_tie_aware_protocol_ties_and_captions_by_hand():
  # 3 texts (texts 0, 1 of video 0; text 2 of video 1), 2 videos; ties everywhere.
  sim = np.array([[0.5, 0.5],     # t2v: tie with the other video -> optimistic rank 0
                  [0.2, 0.9],     # t2v rank 1
                  [0.5, 0.5]])    # t2v rank 0
  m = retrieval.tie_aware_metrics(sim, [0, 0, 1])
  assert (m["r1"], m["meanr"]) == (pytest.approx(200 / 3), pytest.approx(4 / 3))
  # v2t: video 0 column [0.5, 0.2, 0.5]: text 0 above 0, tied 2 -> 0.5; text 1 -> 2.0; best 0.5.
  # video 1 column [0.5, 0.9, 0.5]: text 2 above 1 (0.9), tied 2 -> 1.5.
  assert m["v2t/meanr"] == pytest.approx(((0.5 + 1) + (1.5 + 1)) / 2)
  assert m["v2t/r1"] == pytest.approx(50.0) and m["v2t/medr"] == pytest.approx(2.0)
  # Protocol 'rounded_stable' on the same matrix: stable order, ties rank by index.
  a = retrieval.retrieval_metrics(sim, [0, 0, 1])
  assert a["r1"] == pytest.approx(100 / 3)
  with pytest.raises(ValueError, match="outside"):
    retrieval.tie_aware_metrics(sim, [0, 0, 2])
