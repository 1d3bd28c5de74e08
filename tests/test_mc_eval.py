"""Multiple-choice accuracy (hand-computed) and the eval driver on an 8-device mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fake_family
from configs import common
from vlx import evals
from vlx import sharding as shd
from vlx.evals import multiple_choice as mc


def test_hand_computed_accuracy_and_types():
  # 0 right, 1 wrong, 2 right, 3 wrong, 4 right, 5 right -> 4/6
  m = mc.mc_metrics([2, 0, 4, 1, 3, 0], [2, 1, 4, 3, 3, 0], [0, 0, 1, 1, -1, 1],
                    type_names=("action", "transition"))
  assert m == {"acc": 66.67, "num_questions": 6, "action_acc": 50.0, "transition_acc": 66.67}
  assert mc.mc_metrics([1], [1]) == {"acc": 100.0, "num_questions": 1}


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="no questions"):
    mc.mc_metrics([], [])
  with pytest.raises(ValueError, match="3 predictions but 2"):
    mc.mc_metrics([0, 1, 2], [0, 1])
  with pytest.raises(ValueError, match="question type"):
    mc.mc_metrics([0], [0], None, type_names=("a",))


class Holder(nnx.Module):
  def __init__(self):
    self.scale = nnx.Param(jnp.ones((), jnp.float32))


def _pick_first_token(model, batch):
  """Option k scores choice_ids[:, k, 1]: the test decides every prediction."""
  return batch["choice_ids"][:, :, 1].astype(jnp.float32) * model.scale[...]


FAMILY = fake_family.scorer_family(mc_scores=_pick_first_token)


def _batches(scores: np.ndarray, labels: np.ndarray, batch_size: int = 8):
  """make_eval_batches stand-in: K=4 options, the last batch padded with valid=False rows whose
  scores would all be 'correct'."""
  def make(eval_cfg, config, *, batch_size=batch_size):
    n, k = scores.shape
    for s in range(0, n, batch_size):
      real = min(batch_size, n - s)
      ids = np.zeros((batch_size, k, 5), np.int32)
      ids[:real, :, 1] = scores[s:s + real]
      lab = np.zeros(batch_size, np.int32)
      lab[:real] = labels[s:s + real]
      ids[real:, 0, 1] = 9                        # padding rows predict option 0 == label 0
      yield dict(video=np.zeros((batch_size, 2, 4, 4, 3), np.float32), choice_ids=ids,
                 choice_mask=np.ones_like(ids), label=lab,
                 example_index=np.where(np.arange(batch_size) < real,
                                        np.arange(s, s + batch_size), -1).astype(np.int32),
                 video_index=np.arange(s, s + batch_size, dtype=np.int32),
                 valid=np.arange(batch_size) < real)
  return make


def test_run_mc_eval_drops_padding_rows():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  rs = np.random.RandomState(0)
  scores = rs.permutation(np.arange(13 * 4)).reshape(13, 4) % 7   # ties -> first max wins
  labels = rs.randint(0, 4, 13).astype(np.int32)
  with jax.set_mesh(mesh):
    m = evals.EVALUATORS["multiple_choice"](Holder(), FAMILY, common.mc_eval(batch_size=8), c,
                                            mesh, make_eval_batches=_batches(scores, labels))
  expect = round(100 * float(np.mean(np.argmax(scores, 1) == labels)), 2)
  assert m["acc"] == expect and m["num_questions"] == 13 and m["num_choices"] == 4
  assert m["seconds"] > 0


def test_run_mc_eval_rejects_a_split_read_twice_and_bad_labels():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  scores = np.ones((8, 4), np.int64)
  twice = _batches(scores, np.zeros(8, np.int32))

  def repeated(eval_cfg, config, *, batch_size):
    yield from twice(eval_cfg, config, batch_size=batch_size)
    yield from twice(eval_cfg, config, batch_size=batch_size)

  with jax.set_mesh(mesh), pytest.raises(ValueError, match="repeat an example_index"):
    mc.run_mc_eval(Holder(), FAMILY, common.mc_eval(batch_size=8), c, mesh,
                   make_eval_batches=repeated)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="label outside"):
    mc.run_mc_eval(Holder(), FAMILY, common.mc_eval(batch_size=8), c, mesh,
                   make_eval_batches=_batches(scores, np.full(8, 4, np.int32)))
  with pytest.raises(ValueError, match="'multiple_choice' needs the model family to provide "
                     "mc_scores; family 'fake_scorer' does not"):
    mc.run_mc_eval(Holder(), fake_family.scorer_family(), common.mc_eval(), c, mesh)
