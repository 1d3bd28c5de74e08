"""A toy model family that honours the family contract (README 'Design'), for loop tests.

Video: mean over frames/pixels -> Linear; text: embedding mean -> Linear; a contrastive loss with
rng-driven dropout (so the step rng matters) and a non-trained variable (so 'other' state exists).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx import registry
from vlx.padding import pad_rows
from vlx import sharding as shd


class PromptBuffer(nnx.Variable):
  """A non-trained model variable (like ALPRO's prompt features)."""


class ToyModel(nnx.Module):

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d, e = cfg.width, cfg.embed_dim
    named = lambda names: nnx.with_partitioning(nnx.initializers.lecun_normal(), names)
    self.video_in = nnx.Linear(3, d, kernel_init=named((None, "embed")), rngs=rngs)
    self.video_mlp = nnx.Linear(d, 4 * d, kernel_init=named(("embed", "mlp")), rngs=rngs)
    self.video_out = nnx.Linear(4 * d, e, kernel_init=named(("mlp", "proj")), rngs=rngs)
    self.word = nnx.Embed(cfg.vocab_size, d, rngs=rngs,
                          embedding_init=nnx.with_partitioning(
                              nnx.initializers.normal(0.5), ("vocab", "embed")))
    self.text_out = nnx.Linear(d, e, kernel_init=named(("embed", "proj")), rngs=rngs)
    self.norm = nnx.LayerNorm(e, rngs=rngs)
    self.temp = nnx.Param(jnp.asarray(cfg.temp_init, jnp.float32))
    self.buffer = PromptBuffer(jnp.ones((4,), jnp.float32))


def build(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> ToyModel:
  return ToyModel(model_config, rngs=rngs)


OBJECTIVES = ("vtc", "reg")


def encode_videos(model: ToyModel, batch: dict) -> dict:
  x = batch["video"].mean(axis=(1, 2, 3))                     # [B, C]
  h = jax.nn.gelu(model.video_mlp(model.video_in(x)))
  h = shd.constrain(h, ("batch", "mlp"))
  f = model.norm(model.video_out(h)) * model.buffer[...].mean()
  return {"feat": f / jnp.linalg.norm(f, axis=-1, keepdims=True)}


def encode_texts(model: ToyModel, batch: dict) -> dict:
  emb = model.word(batch["text_ids"])
  m = batch["text_mask"][..., None].astype(jnp.float32)
  h = (emb * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  f = model.norm(model.text_out(h))
  return {"feat": f / jnp.linalg.norm(f, axis=-1, keepdims=True)}


def retrieval_scores(model: ToyModel, texts: dict, videos: dict, *, mode: str) -> jax.Array:
  if mode != "vtc":
    raise ValueError(f"toy family supports mode 'vtc' only, got {mode!r}")
  return texts["feat"] @ videos["feat"].T


def objectives(model: ToyModel, batch: dict, *, active: frozenset[str], rng: jax.Array,
               train: bool) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  v = encode_videos(model, batch)["feat"]
  if train:
    keep = jax.random.bernoulli(rng, 0.9, v.shape)
    v = jnp.where(keep, v / 0.9, 0.0)
  t = encode_texts(model, batch)["feat"]
  sim = t @ v.T / model.temp[...]
  labels = jnp.arange(sim.shape[0])
  lt = -jnp.take_along_axis(jax.nn.log_softmax(sim, 1), labels[:, None], 1).mean()
  lv = -jnp.take_along_axis(jax.nn.log_softmax(sim.T, 1), labels[:, None], 1).mean()
  vtc = (lt + lv) / 2
  reg = 1e-3 * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  losses = {k: v for k, v in {"vtc": vtc, "reg": reg}.items() if k in active}
  return losses, {"temp": model.temp[...]}


def qa_logits(model: ToyModel, batch: dict) -> jax.Array:
  """[B, embed_dim] answer logits: video + question features."""
  return 4.0 * (encode_videos(model, batch)["feat"] + encode_texts(model, batch)["feat"])


def mc_scores(model: ToyModel, batch: dict) -> jax.Array:
  """[B, K]: each option text's feature against the clip's."""
  b, k, n = batch["choice_ids"].shape
  t = encode_texts(model, {"text_ids": batch["choice_ids"].reshape(b * k, n),
                           "text_mask": batch["choice_mask"].reshape(b * k, n)})["feat"]
  return jnp.einsum("bkd,bd->bk", t.reshape(b, k, -1), encode_videos(model, batch)["feat"])


def class_logits(model: ToyModel, batch: dict) -> jax.Array:
  """[B, embed_dim] class logits of the clip."""
  return 4.0 * encode_videos(model, batch)["feat"]


FAMILY = registry.Family(
    name="fake", build=build, objectives=objectives, objective_names=OBJECTIVES,
    encode_videos=encode_videos, encode_texts=encode_texts, retrieval_scores=retrieval_scores,
    retrieval_modes=("vtc",), qa_logits=qa_logits, mc_scores=mc_scores,
    class_logits=class_logits)


def scorer_family(name: str = "fake_scorer", **fns) -> registry.Family:
  """A Family record around eval functions written by a test (e.g. qa_logits=...)."""
  return registry.Family(name=name, build=build, objectives=objectives,
                         objective_names=OBJECTIVES, **fns)


def toy_config() -> ml_collections.ConfigDict:
  """A full vlx config for the toy family (tiny sizes)."""
  from configs import common
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      family="fake", dtype="float32", param_dtype="float32", remat=False,
      width=8, embed_dim=8, vocab_size=32, temp_init=0.1,
      video=ml_collections.ConfigDict(dict(num_frames=2))))
  c.objectives = ml_collections.ConfigDict(dict(vtc=1.0, reg=1.0))
  c.data.global_batch_size = 16
  c.data.train.update(num_frames=2, resolution=4, max_text_len=6)
  c.optim.lr = 1e-2
  c.optim.schedule.warmup_steps = 2
  c.train.update(num_steps=6, log_every=1, ckpt_every=3, keep=5)
  c.evals = ml_collections.ConfigDict(dict(
      toy_test=ml_collections.ConfigDict(dict(
          type="retrieval", builder="toy", split="test", num_frames=2, sampling="uniform",
          resolution=4, max_text_len=6, batch_size=8, mode="vtc", every=0))))
  return c


def synthetic_batch(step: int, batch_size: int, cfg: ml_collections.ConfigDict,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Deterministic per-step batch: caption tokens encode the video's colour class."""
  rs = np.random.RandomState(seed * 100003 + step)
  cls = rs.randint(0, 8, size=batch_size)
  t, r = cfg.data.train.num_frames, cfg.data.train.resolution
  colours = np.stack([(cls >> i) & 1 for i in range(3)], -1).astype(np.float32)
  video = colours[:, None, None, None, :] + 0.1 * rs.randn(batch_size, t, r, r, 3)
  ids = np.zeros((batch_size, cfg.data.train.max_text_len), np.int32)
  ids[:, 0], ids[:, 1], ids[:, 2] = 1, 3 + cls, 2
  mask = (ids > 0).astype(np.int32)
  return {"video": video.astype(np.float32), "text_ids": ids, "text_mask": mask}


def make_train_iterator(config, mesh, *, start_step: int = 0):
  """Synthetic stand-in for vlx.data.train_stream.make_train_iterator (global sharded batches)."""
  sharding = shd.batch_sharding(mesh, config.mesh.rules)
  step = start_step
  while True:
    b = synthetic_batch(step, config.data.global_batch_size, config, config.seed)
    yield {k: jax.device_put(v, sharding) for k, v in b.items()}
    step += 1


def make_eval_batches(eval_cfg, config, *, batch_size: int, num_videos: int = 20):
  """Synthetic stand-in for vlx.data.eval_stream.make_eval_batches (numpy, padded last batch)."""
  full = synthetic_batch(10 ** 6, num_videos, config, seed=7)
  for start in range(0, num_videos, batch_size):
    rows = {k: v[start:start + batch_size] for k, v in full.items()}
    n = rows["video"].shape[0]
    pad = batch_size - n
    rows = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in rows.items()}
    rows["video_index"] = np.arange(start, start + batch_size, dtype=np.int32)
    rows["valid"] = np.arange(batch_size) < n
    yield rows


def eval_rows(kind: str, example: np.ndarray, sub: np.ndarray,
              cfg: ml_collections.ConfigDict, num_choices: int = 4) -> dict[str, np.ndarray]:
  """Deterministic eval rows of one eval type: row i belongs to example `example[i]` (its clip)
  and is its `sub[i]`-th caption (retrieval) or view (classification); contents depend on
  (example, sub) only, never on the host or batch that yields them."""
  t, r, n = cfg.data.train.num_frames, cfg.data.train.resolution, cfg.data.train.max_text_len
  rng = lambda e, s, salt: np.random.RandomState((int(e) * 7919 + int(s) * 131 + salt) % 2**31)
  video = np.stack([rng(e, s if kind == "classification" else 0, 1).rand(t, r, r, 3)
                    for e, s in zip(example, sub)]).astype(np.float32)
  ids = np.stack([rng(e, s, 2).randint(3, cfg.model.vocab_size, n) for e, s in zip(example, sub)])
  out = {"video": video, "text_ids": ids.astype(np.int32),
         "text_mask": np.ones_like(ids, np.int32), "video_index": example.astype(np.int32)}
  classes = cfg.model.embed_dim
  if kind == "qa":
    out["label"] = np.asarray([rng(e, s, 3).randint(-1, classes) for e, s in zip(example, sub)])
    out["qtype"] = np.asarray([rng(e, s, 4).randint(-1, 5) for e, s in zip(example, sub)])
    out["example_index"] = example * 10 + sub
  elif kind == "multiple_choice":
    out["choice_ids"] = np.stack([rng(e, s, 5).randint(3, cfg.model.vocab_size, (num_choices, n))
                                  for e, s in zip(example, sub)])
    out["choice_mask"] = np.ones_like(out["choice_ids"])
    out["label"] = np.asarray([rng(e, s, 6).randint(0, num_choices) for e, s in zip(example, sub)])
    out["example_index"] = example.copy()
  elif kind == "classification":
    out["label"] = np.asarray([rng(e, 0, 7).randint(0, classes) for e in example])
    out["example_index"], out["view_index"] = example.copy(), sub.copy()
  return {k: np.asarray(v, np.int32) if k not in ("video", "valid") else v
          for k, v in out.items()}


def host_eval_batches(eval_cfg, config, *, batch_size: int, process_index: int | None = None,
                      process_count: int | None = None):
  """Synthetic make_eval_batches for any eval type (`eval_cfg.type`) on any number of hosts, as
  the real pipeline splits and pads: `eval_cfg.num_examples` examples, `eval_cfg.rows_per_example`
  rows each, a contiguous share per host, the same number of batches on every host; rows past a
  host's share repeat the batch's first row (zeros if none) with valid=False and index keys -1."""
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  n, per = int(eval_cfg.num_examples), int(eval_cfg.get("rows_per_example", 1) or 1)
  sizes = [n // pc + (i < n % pc) for i in range(pc)]
  mine = np.arange(sum(sizes[:pi]), sum(sizes[:pi + 1]))
  rows = eval_rows(eval_cfg.type, np.repeat(mine, per), np.tile(np.arange(per), len(mine)), config)
  rows["valid"] = np.ones(len(mine) * per, bool)
  for b in range(-(-max(sizes) * per // batch_size)):
    chunk = {k: v[b * batch_size:(b + 1) * batch_size] for k, v in rows.items()}
    yield pad_rows(chunk, batch_size)
