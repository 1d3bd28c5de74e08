"""Classification top-1 / top-5 with view averaging (hand-computed) and the eval driver."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fake_family
from configs import common
from vlx import evals
from vlx import sharding as shd
from vlx.evals import classification as cls


def test_views_are_averaged_before_top_k():
  # video 0: view A prefers class 0, view B class 2; the mean prefers class 2 (label 2): right.
  # video 1: one view, label 1 ranks 6th of 7 (top-5 miss); video 2: label 3 ranks 2nd.
  logits = np.array([[3.0, 0, 0, 0, 0, 0, 0],
                     [0.0, 0, 5, 0, 0, 0, 0],
                     [6.0, 1, 5, 4, 3, 2, 7],
                     [0.0, 1, 2, 3, 4, 5, 6]])[[0, 2, 1, 3]]
  labels = np.array([2, 1, 2, 3])
  index = np.array([0, 1, 0, 2])
  m = cls.classification_metrics(logits, labels, index)
  assert m == {"top1": 33.33, "top5": 66.67, "num_videos": 3, "num_views": 4, "num_classes": 7}
  # per view (no grouping): view A of video 0 is wrong, view B right
  m1 = cls.classification_metrics(logits, labels)
  assert m1["top1"] == 25.0 and m1["num_videos"] == 4


def test_probability_averaging_matches_the_vimpac_reference():
  """average='probs': softmax per view, mean over a video's views (spec §5), on the reference
  fixture's fine-tuning logits; `loss` = mean over videos of the mean per-view cross entropy."""
  import pathlib
  d = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/vimpac/tiny"
  out, inp = np.load(d / "outputs.npz"), np.load(d / "inputs.npz")
  logits, labels = out["ft_logits"], inp["ft_labels"]
  views = len(logits) // len(labels)
  index = np.repeat(np.arange(len(labels)), views)
  m = cls.classification_metrics(logits, labels[index], index, average="probs")
  assert m["top1"] == round(100 * float(out["ft_accuracy"]), 2)
  assert m["num_videos"] == len(labels) and m["num_views"] == len(logits)
  assert m["num_classes"] == logits.shape[1]
  np.testing.assert_allclose(m["loss"], float(np.mean(out["ft_loss_per_video"])), atol=1e-5)
  probs = np.exp(cls._log_softmax(logits.astype(np.float64)))
  np.testing.assert_allclose(cls.average_views(probs, labels[index], index)[0],
                             out["ft_avg_probs"], atol=1e-6)
  # logit averaging differs from probability averaging on these views (the option matters)
  lg = cls.average_views(logits, labels[index], index)[0]
  assert not np.allclose(np.exp(cls._log_softmax(lg)), out["ft_avg_probs"], atol=1e-3)
  with pytest.raises(ValueError, match="average='mean'"):
    cls.classification_metrics(logits, labels[index], index, average="mean")


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="different labels"):
    cls.classification_metrics(np.zeros((2, 3)), [0, 1], [5, 5])
  with pytest.raises(ValueError, match="label outside"):
    cls.classification_metrics(np.zeros((1, 3)), [3])
  with pytest.raises(ValueError, match="2 rows but 1 labels"):
    cls.classification_metrics(np.zeros((2, 3)), [0])


class Holder(nnx.Module):
  def __init__(self):
    self.scale = nnx.Param(jnp.ones((), jnp.float32))


FAMILY = fake_family.scorer_family(
    class_logits=lambda m, b: jax.nn.one_hot(b["text_ids"][:, 1], 5) * m.scale[...]
    + 0.1 * b["text_ids"][:, 2:3].astype(jnp.float32) * jax.nn.one_hot(b["text_ids"][:, 3], 5))


def test_run_classification_eval_groups_views_and_drops_padding():
  """5 videos x 2 views (rows 2i, 2i+1), batches of 4, the last one padded."""
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  top = np.array([1, 1, 3, 0, 2, 2, 4, 1, 0, 0])        # each view's argmax class
  second = np.array([0, 2, 0, 1, 0, 3, 0, 2, 0, 0])      # a weak second class (x0.1 weight 1)
  labels = np.repeat([1, 3, 2, 1, 0], 2)

  def make(eval_cfg, config, *, batch_size):
    for s in range(0, 10, batch_size):
      real = min(batch_size, 10 - s)
      ids = np.zeros((batch_size, 4), np.int32)
      ids[:real, 1], ids[:real, 2], ids[:real, 3] = top[s:s + real], 1, second[s:s + real]
      lab = np.zeros(batch_size, np.int32)
      lab[:real] = labels[s:s + real]
      ex = np.full(batch_size, -1, np.int32)
      ex[:real] = np.arange(s, s + real) // 2
      yield dict(video=np.zeros((batch_size, 2, 4, 4, 3), np.float32), text_ids=ids,
                 text_mask=np.ones_like(ids), label=lab, example_index=ex,
                 view_index=np.arange(batch_size, dtype=np.int32) % 2,
                 video_index=ex, valid=np.arange(batch_size) < real)

  with jax.set_mesh(mesh):
    m = evals.EVALUATORS["classification"](Holder(), FAMILY,
                                           common.classification_eval(batch_size=4), c, mesh,
                                           make_eval_batches=make)
  # video 0: views 1,1 -> 1 right; video 1: 3 vs 0 tie 1.0 each + 0.1 on class 0 and 1 ->
  # class 0 (1.1) wrong; video 2: 2,2 right; video 3: 4 vs 1 (+0.1 on 0 and 2) -> tie 1.0 ->
  # first index 1 right; video 4: 0,0 (+0.1 twice on 0) -> 0 right.
  assert m["top1"] == 80.0 and m["top5"] == 100.0
  assert m["num_videos"] == 5 and m["num_views"] == 10
