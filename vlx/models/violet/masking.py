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
MASK_RATIO = 0.15
PATCH = 32  # pixels per visual token side


def black_pixel(norm: str = "imagenet", dtype=jnp.float32) -> jax.Array:
  """The normalised value of a raw 0 pixel, [3]: masked patches are zeroed before normalising."""
  mean, std = NORMS[norm]
  return ((0.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


def apply_masks(video: jax.Array, ids: jax.Array, mtm_mask: jax.Array, mvm_mask: jax.Array,
                vq: jax.Array, *, mask_id: int = MASK_ID, patch: int = PATCH,
                norm: str = "imagenet") -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Masked inputs and labels from 0/1 masks (spec §5.4 "Apply", §5.5).

  video [B,T,H,W,3] normalised; ids [B,X]; mtm_mask [B,X]; mvm_mask [B,T,h,w] with h = H/patch;
  vq [B,T,h,w] dVAE token ids. Returns (video_masked, ids_masked, mtm_labels [B,X],
  mvm_labels [B, T*(1+h*w)]) with labels -1 where not masked and at every frame-CLS slot.
  Every masked text token becomes `mask_id` (no 80/10/10); every masked visual token's
  patch x patch pixel block becomes a raw black pixel.
  """
  b, t, height, width, _ = video.shape
  h, w = mvm_mask.shape[2], mvm_mask.shape[3]
  if (h * patch, w * patch) != (height, width):
    raise ValueError(f"mvm_mask grid {h}x{w} does not match frames {height}x{width} "
                     f"with {patch}-pixel visual tokens")
  mtm = mtm_mask.astype(bool)
  mvm = mvm_mask.astype(bool)
  ids = jnp.asarray(ids)
  ids_masked = jnp.where(mtm, jnp.asarray(mask_id, ids.dtype), ids)
  mtm_labels = jnp.where(mtm, ids, -1).astype(jnp.int32)
  pixel_mask = jnp.repeat(jnp.repeat(mvm, patch, axis=2), patch, axis=3)[..., None]
  video_masked = jnp.where(pixel_mask, black_pixel(norm, video.dtype), video)
  grid_labels = jnp.where(mvm, jnp.asarray(vq).astype(jnp.int32), -1).reshape(b, t, h * w)
  cls = jnp.full((b, t, 1), -1, jnp.int32)
  mvm_labels = jnp.concatenate([cls, grid_labels], axis=2).reshape(b, t * (1 + h * w))
  return video_masked, ids_masked, mtm_labels, mvm_labels
