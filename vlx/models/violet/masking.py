"""VIOLET pre-training masking (spec §5.4/§5.5): applying given masks and sampling them.

`apply_masks` turns masks into the model inputs and the MLM/MVM labels; it is shared by the
training step and the parity runner (which takes the fixture's masks as given). The samplers draw
the masks in JAX from a key (jit-compatible, deterministic in the key); the reference's numpy /
torch RNG streams are not reproduced, only their distributions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx.data.video_ops import NORMS

MASK_ID = 103  # BERT [MASK]
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0
SPECIAL_IDS = (CLS_ID, SEP_ID, PAD_ID)   # never masked (bert-base-uncased ids, spec §1)
MASK_RATIO = 0.15
PATCH = 32  # pixels per visual token side


def black_pixel(norm: str = "imagenet", dtype=jnp.float32) -> jax.Array:
  """The normalised value of a raw 0 pixel, [3]: masked patches are zeroed before normalising."""
  mean, std = NORMS[norm]
  return ((0.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


def apply_masks(video: jax.Array, ids: jax.Array, mtm_mask: jax.Array, mvm_mask: jax.Array,
                vq: jax.Array, *, mask_id: int | jax.Array = MASK_ID, patch: int = PATCH,
                norm: str = "imagenet") -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Masked inputs and labels from 0/1 masks (spec §5.4 "Apply", §5.5).

  video [B,T,H,W,3] normalised; ids [B,X]; mtm_mask [B,X]; mvm_mask [B,T,h,w] with h = H/patch;
  vq [B,T,h,w] dVAE token ids. Returns (video_masked, ids_masked, mtm_labels [B,X],
  mvm_labels [B, T*(1+h*w)]) with labels -1 where not masked and at every frame-CLS slot.
  Every masked text token becomes `mask_id` (no 80/10/10; an int or int [B] per row for other
  vocabularies); every masked visual token's patch x patch pixel block becomes a raw black
  pixel.
  """
  b, t, height, width, _ = video.shape
  h, w = mvm_mask.shape[2], mvm_mask.shape[3]
  if (h * patch, w * patch) != (height, width):
    raise ValueError(f"mvm_mask grid {h}x{w} does not match frames {height}x{width} "
                     f"with {patch}-pixel visual tokens")
  mtm = mtm_mask.astype(bool)
  mvm = mvm_mask.astype(bool)
  ids = jnp.asarray(ids)
  mask_id = jnp.asarray(mask_id, ids.dtype)
  ids_masked = jnp.where(mtm, mask_id[:, None] if mask_id.ndim else mask_id, ids)
  mtm_labels = jnp.where(mtm, ids, -1).astype(jnp.int32)
  pixel_mask = jnp.repeat(jnp.repeat(mvm, patch, axis=2), patch, axis=3)[..., None]
  video_masked = jnp.where(pixel_mask, black_pixel(norm, video.dtype), video)
  grid_labels = jnp.where(mvm, jnp.asarray(vq).astype(jnp.int32), -1).reshape(b, t, h * w)
  cls = jnp.full((b, t, 1), -1, jnp.int32)
  mvm_labels = jnp.concatenate([cls, grid_labels], axis=2).reshape(b, t * (1 + h * w))
  return video_masked, ids_masked, mtm_labels, mvm_labels


# --- Samplers (spec §5.4) ------------------------------------------------------------------------
def special_text(ids: jax.Array, special_ids=SPECIAL_IDS) -> jax.Array:
  """bool [B,X]: [CLS], [SEP] and [PAD] positions, never masked. `special_ids`: a tuple of ids
  or int [B, K] per row (the tokenizer's, see vlx.models.violet.data)."""
  special = jnp.asarray(special_ids, ids.dtype)
  if special.ndim == 1:
    special = jnp.broadcast_to(special, (ids.shape[0],) + special.shape)
  return jnp.any(ids[:, :, None] == special[:, None, :], axis=-1)


def blockwise_text(key: jax.Array, ids: jax.Array, ratio: float = MASK_RATIO,
                   special_ids=SPECIAL_IDS) -> jax.Array:
  """bool [B,X]: each non-special token independently with probability `ratio`."""
  return (jax.random.uniform(key, ids.shape) < ratio) & ~special_text(ids, special_ids)


def _check_grid(h: int, w: int) -> None:
  if h * 2 // 3 < 2 or w * 2 // 3 < 2:
    raise ValueError(f"VIOLET blockwise masking needs at least 3x3 visual tokens per frame "
                     f"(frames of >= 96 px), got {h}x{w} (config.data.train.resolution)")


def blockwise_boxes(key: jax.Array, batch: int, t: int, h: int, w: int) -> dict[str, jax.Array]:
  """Per sample T random cuboids of the (T,h,w) token grid, int32 [B,T] each of
  t1, y1, x1 (start) and bt, bh, bw (size).

  Sizes as the reference's numpy draws (exclusive upper bounds): frames in [1, T-1] (1 when
  T == 1), rows in [1, h*2//3 - 1], columns in [1, w*2//3 - 1]; starts uniform among the
  positions where the cuboid fits (randint(0, size - block + 1)).
  """
  _check_grid(h, w)
  ks = jax.random.split(key, 6)
  shape = (batch, t)
  bt = jax.random.randint(ks[0], shape, 1, max(t, 2))
  bh = jax.random.randint(ks[1], shape, 1, h * 2 // 3)
  bw = jax.random.randint(ks[2], shape, 1, w * 2 // 3)
  t1 = jax.random.randint(ks[3], shape, 0, t - bt + 1)
  y1 = jax.random.randint(ks[4], shape, 0, h - bh + 1)
  x1 = jax.random.randint(ks[5], shape, 0, w - bw + 1)
  return dict(t1=t1, y1=y1, x1=x1, bt=bt, bh=bh, bw=bw)


def boxes_mask(boxes: dict[str, jax.Array], t: int, h: int, w: int) -> jax.Array:
  """bool [B,T,h,w]: the union of each sample's cuboids."""

  def inside(start, size, n):  # [B, cuboids, n]
    r = jnp.arange(n)
    return (r >= start[..., None]) & (r < (start + size)[..., None])

  it = inside(boxes["t1"], boxes["bt"], t)
  iy = inside(boxes["y1"], boxes["bh"], h)
  ix = inside(boxes["x1"], boxes["bw"], w)
  cells = it[:, :, :, None, None] & iy[:, :, None, :, None] & ix[:, :, None, None, :]
  return jnp.any(cells, axis=1)


def blockwise_video(key: jax.Array, batch: int, t: int, h: int, w: int) -> jax.Array:
  """bool [B,T,h,w]: per sample the union of T random cuboids (`blockwise_boxes`)."""
  return boxes_mask(blockwise_boxes(key, batch, t, h, w), t, h, w)


def attended_count(num_video_tokens: int, text_len: int, ratio: float = MASK_RATIO) -> int:
  """n = int(0.15 * (Lv + X)): the attended branch's shared video + text budget."""
  return int(ratio * (num_video_tokens + text_len))


def attention_weights(att: jax.Array, ids: jax.Array, t: int, h: int, w: int,
                      special_ids=SPECIAL_IDS) -> jax.Array:
  """float32 [B, Lv+X]: attention received with the special positions (frame-CLS video slots,
  text [CLS]/[SEP]/[PAD]) zeroed, as the reference does before its draw."""
  lv = t * (1 + h * w)
  video_cls = (jnp.arange(lv) % (1 + h * w)) == 0
  special = jnp.concatenate(
      [jnp.broadcast_to(video_cls, (ids.shape[0], lv)), special_text(ids, special_ids)], axis=1)
  return jnp.where(special, 0.0, jax.lax.stop_gradient(att).astype(jnp.float32))


def sample_without_replacement(key: jax.Array, weights: jax.Array, n: int) -> jax.Array:
  """bool [B,L]: per row n positions drawn without replacement with probabilities proportional
  to `weights` (>= 0), as torch.multinomial(replacement=False); Gumbel-top-k is this exact
  distribution. Zero-weight positions are never drawn (rows with fewer positive weights than n
  get all of them)."""
  n = min(n, weights.shape[-1])
  if n <= 0:
    return jnp.zeros(weights.shape, bool)
  positive = weights > 0
  gumbel = jax.random.gumbel(key, weights.shape, jnp.float32)
  scores = jnp.where(positive, jnp.log(jnp.where(positive, weights, 1.0)) + gumbel, -jnp.inf)
  _, idx = jax.lax.top_k(scores, n)
  chosen = jnp.zeros(weights.shape, bool)
  chosen = jax.vmap(lambda c, i: c.at[i].set(True))(chosen, idx)
  return chosen & positive


def attended(key: jax.Array, att: jax.Array, ids: jax.Array, t: int, h: int, w: int,
             ratio: float = MASK_RATIO, special_ids=SPECIAL_IDS
             ) -> tuple[jax.Array, jax.Array]:
  """(mtm_mask bool [B,X], mvm_mask bool [B,T,h,w]) of the attended branch: n = int(0.15 L)
  positions of [video | text] drawn ∝ the attention they receive (spec §5.4, branch 1)."""
  b, x = ids.shape
  lv = t * (1 + h * w)
  weights = attention_weights(att, ids, t, h, w, special_ids)
  chosen = sample_without_replacement(key, weights, attended_count(lv, x, ratio))
  mvm = chosen[:, :lv].reshape(b, t, 1 + h * w)[:, :, 1:].reshape(b, t, h, w)
  return chosen[:, lv:], mvm


def sample_masks(key: jax.Array, ids: jax.Array, att: jax.Array | None, *, num_frames: int,
                 grid: tuple[int, int], attended_prob: float = 0.5,
                 ratio: float = MASK_RATIO, special_ids=SPECIAL_IDS) -> dict[str, jax.Array]:
  """Per sample blockwise (branch 0) or attended (branch 1) masks, each with probability 1/2.

  ids [B,X] unmasked token ids; att [B, Lv+X] attention received on the unmasked inputs (the
  model's `attention_received`), None = blockwise only; special_ids: see `special_text`. Returns mtm_mask int32 [B,X],
  mvm_mask int32 [B,T,h,w], branch int32 [B].
  """
  b = ids.shape[0]
  t, (h, w) = num_frames, grid
  k_branch, k_text, k_video, k_att = jax.random.split(key, 4)
  mtm = blockwise_text(k_text, ids, ratio, special_ids)
  mvm = blockwise_video(k_video, b, t, h, w)
  branch = jnp.zeros((b,), bool)
  if att is not None and attended_prob > 0:
    branch = jax.random.uniform(k_branch, (b,)) < attended_prob
    a_mtm, a_mvm = attended(k_att, att, ids, t, h, w, ratio, special_ids)
    mtm = jnp.where(branch[:, None], a_mtm, mtm)
    mvm = jnp.where(branch[:, None, None, None], a_mvm, mvm)
  return dict(mtm_mask=mtm.astype(jnp.int32), mvm_mask=mvm.astype(jnp.int32),
              branch=branch.astype(jnp.int32))


def vtm_negatives(key: jax.Array, batch: int, max_options: int = 4) -> jax.Array:
  """int32 [B, O-1], O = min(B, 4): per row i the first O-1 entries of a uniformly random
  permutation of the other rows (spec §5.2: negatives are texts, the video stays)."""
  o = min(batch, max_options)
  keys = jax.random.uniform(key, (batch, batch))
  keys = jnp.where(jnp.eye(batch, dtype=bool), jnp.inf, keys)   # self sorts last
  return jnp.argsort(keys, axis=1)[:, :o - 1].astype(jnp.int32)
