"""VIMPAC training objectives in the family-contract form (spec §3.2-§3.4 pre-training, §5
fine-tuning).

Pre-training rows hold two clips of one video (`vq_tokens` [B, 2, L, H, W]); they are flattened to
[2B, L, H, W] as [first clips; second clips] (the positive of row i is row i + B), block-masked
(union of `mask_blocks` random 3-D boxes per clip, PAD never masked, every masked id -> [MASK]) and
run once: the tied head predicts the masked ids ("mlm") and the contrastive head's projections of
the CLS outputs give the NCE loss τ·(CE_a + CE_b) ("nce"). Both losses see the same masked input,
as in the reference. Fine-tuning rows (`vq_tokens` [B, L, H, W], `label`) give the (label-smoothed)
cross entropy of the classifier ("classification").

Randomness comes from jax.random (the reference draws boxes with Python `random`): the draws are
not the reference's, their distribution is (bounds in `sample_block_boxes`). Everything has static
shapes and no host syncs, so it runs under jit on sharded batches; the NCE logits and the
BatchNorm statistics over the global 2B rows equal the reference's all-gathered / SyncBatchNorm
ones.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.models.vimpac.model import MASK_TOKEN_ID, PAD_TOKEN_ID

OBJECTIVES = ("mlm", "nce", "classification")
IGNORE_INDEX = -100
# defaults of the model-config fields this module reads from the model (spec §3.2, §3.4, §5)
MASK_BLOCKS = 5
NCE_TEMPERATURE = 0.2
LABEL_SMOOTHING = 0.0
_NEG_INF_DIAG = 1e9   # the reference's -1e9 on the same-clip similarity


# -- block masking (spec §3.2) --------------------------------------------------------------------
def sample_block_boxes(rng: jax.Array, n: int, blocks: int, grid: tuple[int, int, int]
                       ) -> jax.Array:
  """int32 [n, blocks, 6] half-open boxes [l1, l2, h1, h2, w1, w2], drawn as the reference's
  mask_3d: sizes lt in [1, L*2//3], lh in [1, H//2], lw in [1, W//2] (inclusive), then starts
  l1 in [0, L - lt] (etc.), independently per clip and block. A bound below 1 (L < 3 or a side
  < 2, where the reference's randint raises) is raised to 1."""
  if blocks <= 0:
    raise ValueError(f"model.mask_blocks={blocks}: boxes need a positive block count "
                     "(negative values mean Bernoulli masking, see sample_mask)")
  length, height, width = grid
  hi = jnp.asarray([max(length * 2 // 3, 1), max(height // 2, 1), max(width // 2, 1)],
                   jnp.int32)
  k_size, k_start = jax.random.split(rng)
  size = jax.random.randint(k_size, (n, blocks, 3), 1, hi + 1, dtype=jnp.int32)
  start = jax.random.randint(k_start, (n, blocks, 3), 0,
                             jnp.asarray(grid, jnp.int32) - size + 1, dtype=jnp.int32)
  return jnp.stack([start, start + size], axis=-1).reshape(n, blocks, 6)


def max_masked(blocks: int, grid: tuple[int, int, int]) -> int:
  """The most positions `blocks` sampled boxes can cover in one clip (every box at its largest
  size, disjoint), capped at L*H*W; L*H*W for Bernoulli / no masking."""
  length, height, width = grid
  total = length * height * width
  if blocks <= 0:
    return total
  box = max(length * 2 // 3, 1) * max(height // 2, 1) * max(width // 2, 1)
  return min(total, blocks * box)


def masked_rows(x: jax.Array, labels: jax.Array, bound: int) -> tuple[jax.Array, jax.Array]:
  """(x [n, K, D], labels [n, K]): each clip's first K = `bound` positions with the labelled
  ones first (stable order). Exact for the loss when no clip has more than `bound` labels (the
  sampler's max_masked): the head then runs on K instead of L*H*W positions per clip."""
  n = labels.shape[0]
  flat_x, flat_labels = x.reshape(n, -1, x.shape[-1]), labels.reshape(n, -1)
  if bound >= flat_labels.shape[1]:
    return flat_x, flat_labels
  order = jnp.argsort((flat_labels == IGNORE_INDEX).astype(jnp.int8), axis=1,
                      stable=True)[:, :bound]
  return (jnp.take_along_axis(flat_x, order[..., None], axis=1),
          jnp.take_along_axis(flat_labels, order, axis=1))


def mask_from_boxes(boxes: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
  """bool [n, L, H, W]: the union of each row's half-open boxes [n, k, 6]."""
  boxes = jnp.asarray(boxes)
  inside = []
  for axis, size in enumerate(grid):
    pos = jnp.arange(size)
    lo, hi = boxes[..., 2 * axis, None], boxes[..., 2 * axis + 1, None]
    inside.append((pos >= lo) & (pos < hi))                    # [n, k, size]
  m = (inside[0][:, :, :, None, None] & inside[1][:, :, None, :, None]
       & inside[2][:, :, None, None, :])
  return jnp.any(m, axis=1)


def sample_mask(rng: jax.Array, n: int, blocks: int, grid: tuple[int, int, int]) -> jax.Array:
  """bool [n, L, H, W]: `blocks` > 0 boxes per clip; < 0: i.i.d. Bernoulli(-blocks / 1000) (the
  reference's option); 0: nothing masked."""
  if blocks > 0:
    return mask_from_boxes(sample_block_boxes(rng, n, blocks, grid), grid)
  if blocks < 0:
    return jax.random.bernoulli(rng, -blocks / 1000.0, (n,) + tuple(grid))
  return jnp.zeros((n,) + tuple(grid), bool)


def apply_mask(codes: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(masked_codes, labels, mask): mask &= codes != PAD; masked ids -> [MASK]; labels = the
  original id where masked, -100 elsewhere."""
  mask = jnp.asarray(mask, bool) & (codes != PAD_TOKEN_ID)
  return (jnp.where(mask, MASK_TOKEN_ID, codes).astype(codes.dtype),
          jnp.where(mask, codes, IGNORE_INDEX).astype(jnp.int32), mask)


def block_masking(codes: jax.Array, rng: jax.Array, blocks: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(masked_codes, labels, mask) of codes [n, L, H, W] (spec §3.2)."""
  n, *grid = codes.shape
  return apply_mask(codes, sample_mask(rng, n, blocks, tuple(grid)))


def flatten_clips(codes: jax.Array) -> jax.Array:
  """[B, 2, L, H, W] -> [2B, L, H, W] as [first clips; second clips] (transpose(0, 1).flatten)."""
  if codes.ndim != 5:
    raise ValueError(f"vq_tokens of shape {codes.shape}: pre-training rows need two clips per "
                     "video, [B, 2, L, H, W] (the token reader's clips=2)")
  return jnp.swapaxes(codes, 0, 1).reshape((-1,) + codes.shape[2:])


# -- losses ---------------------------------------------------------------------------------------
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-row -log softmax(logits)[label] (float32 or wider), labels in range."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def mlm_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean CE over positions with a label != -100, their argmax accuracy in percent) of logits
  [..., V+5] (softmax over every class, special ids included; spec §3.3). No labelled position
  gives 0 (the reference would divide by zero)."""
  logits = logits.reshape(-1, logits.shape[-1])
  labels = labels.reshape(-1)
  valid = labels != IGNORE_INDEX
  count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
  nll = cross_entropy(logits, jnp.where(valid, labels, 0))
  correct = (jnp.argmax(logits, axis=-1) == labels) & valid
  return (jnp.sum(jnp.where(valid, nll, 0.0)) / count,
          100.0 * jnp.sum(correct).astype(jnp.float32) / count)


def nce_logits(proj: jax.Array, temperature: float = NCE_TEMPERATURE
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(z = proj / ||proj||, [z1 z2ᵀ | z1 z1ᵀ - 1e9 I] / τ, [z2 z1ᵀ | z2 z2ᵀ - 1e9 I] / τ) of
  proj [2B, d] ordered [first clips; second clips] (DistributedNCELoss, spec §3.4; the -1e9 is
  added after the division, as in the reference)."""
  proj = proj.astype(jnp.promote_types(proj.dtype, jnp.float32))
  z = proj / jnp.linalg.norm(proj, axis=-1, keepdims=True)
  b = z.shape[0] // 2
  z1, z2 = z[:b], z[b:]
  eye = _NEG_INF_DIAG * jnp.eye(b, dtype=z.dtype)
  la = jnp.concatenate([z1 @ z2.T / temperature, z1 @ z1.T / temperature - eye], axis=1)
  lb = jnp.concatenate([z2 @ z1.T / temperature, z2 @ z2.T / temperature - eye], axis=1)
  return z, la, lb


def nce_loss(proj: jax.Array, temperature: float = NCE_TEMPERATURE) -> jax.Array:
  """τ·(CE_a + CE_b): both directions summed, not averaged, and scaled by τ (spec §3.4)."""
  _, la, lb = nce_logits(proj, temperature)
  target = jnp.arange(la.shape[0])
  return temperature * (cross_entropy(la, target).mean() + cross_entropy(lb, target).mean())


def classification_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
                        ) -> jax.Array:
  """Mean over rows of (1 - ε)·NLL + ε·mean_k(-log p_k) (the reference's LabelSmoothing
  CrossEntropy; ε = 0: plain CE; spec §5)."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  if not label_smoothing:
    return nll.mean()
  return ((1.0 - label_smoothing) * nll - label_smoothing * logp.mean(-1)).mean()


# -- family contract ------------------------------------------------------------------------------
def _pretrain(model, codes, active, rng, train, mask):
  """mlm / nce losses of two-clip rows (one forward on the masked 2B clips)."""
  flat = flatten_clips(jnp.asarray(codes).astype(jnp.int32))
  k_mask, k_drop = jax.random.split(rng)
  grid = tuple(flat.shape[1:])
  bound = grid[0] * grid[1] * grid[2]
  if mask is None:
    blocks = int(getattr(model, "mask_blocks", MASK_BLOCKS))
    mask, bound = sample_mask(k_mask, flat.shape[0], blocks, grid), max_masked(blocks, grid)
  masked, labels, mask = apply_mask(flat, mask)
  rngs = nnx.Rngs(dropout=k_drop) if train else None
  cls, x = model(masked, deterministic=not train, rngs=rngs)
  losses, metrics = {}, {}
  if "mlm" in active:
    # the tied head only where a sampled mask can be (exact: every label is kept)
    xs, kept = masked_rows(x, labels, bound)
    losses["mlm"], metrics["mask_accuracy"] = mlm_loss(model.mlm_logits(xs), kept)
    metrics["mask_ratio"] = jnp.mean(mask.astype(jnp.float32))
  if "nce" in active:
    temperature = float(getattr(model, "nce_temperature", NCE_TEMPERATURE))
    losses["nce"] = nce_loss(model.cls_head(cls, train_bn=train), temperature)
  return losses, metrics


def _classification(model, batch, rng, train):
  codes = jnp.asarray(batch["vq_tokens"]).astype(jnp.int32)
  if codes.ndim != 4:
    raise ValueError(f"vq_tokens of shape {codes.shape}: the classification objective needs one "
                     "clip per row, [B, L, H, W] (the token reader's clips=0)")
  rngs = nnx.Rngs(dropout=rng) if train else None
  cls, _ = model(codes, deterministic=not train, rngs=rngs)
  logits = model.classify(cls)
  labels = jnp.asarray(batch["label"]).astype(jnp.int32)
  eps = float(getattr(model, "label_smoothing", LABEL_SMOOTHING))
  acc = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)) * 100.0
  return classification_loss(logits, labels, eps), acc


def objectives(model, batch: dict, *, active: frozenset, rng: jax.Array | None = None,
               train: bool = False, mask: jax.Array | None = None
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({objective: loss}, metrics) of the active objectives (vlx.registry.Objectives).

  mlm / nce: batch['vq_tokens'] [B, 2, L, H, W]; metrics mask_accuracy (percent over masked
  positions) and mask_ratio (masked fraction of all positions). classification:
  batch['vq_tokens'] [B, L, H, W] + batch['label']; metric accuracy (top-1 percent).
  `rng` is split into the masking and the dropout keys; `train` turns dropout and the contrastive
  head's BatchNorm batch statistics (which update its running statistics) on. `mask` (bool
  [2B, L, H, W], flattened order) replaces the sampled mask (tests, fixed evaluations)."""
  unknown = sorted(set(active) - set(OBJECTIVES))
  if unknown:
    raise ValueError(f"unknown VIMPAC objectives {unknown}; expected {OBJECTIVES}")
  if rng is None:
    if train:
      raise ValueError("VIMPAC objectives need an rng key when training (dropout)")
    rng = jax.random.key(0)   # evaluation: a fixed mask
  k_pre, k_cls = jax.random.split(rng)
  losses: dict[str, jax.Array] = {}
  metrics: dict[str, jax.Array] = {}
  if active & {"mlm", "nce"}:
    pl, pm = _pretrain(model, batch["vq_tokens"], active, k_pre, train, mask)
    losses.update(pl)
    metrics.update(pm)
  if "classification" in active:
    losses["classification"], metrics["accuracy"] = _classification(model, batch, k_cls, train)
  return {k: losses[k] for k in OBJECTIVES if k in losses}, metrics
