"""Word-patch alignment by optimal transport (IPOT; All-in-one spec §4.2, UNITER's WRA).

The transport plan is an inexact proximal-point solution on the *detached* cost, so the
gradient of the distance flows through the cost only. Masks are boolean: True = token used.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine_cost(x: jax.Array, y: jax.Array, x_valid: jax.Array, y_valid: jax.Array,
                eps: float = 1e-5) -> jax.Array:
  """[B,Lx,Ly] 1 - cos(x_i, y_j) (F.normalize with eps), 0 where either token is invalid."""
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  yn = y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), eps)
  cost = 1.0 - jnp.einsum("bid,bjd->bij", xn, yn)
  joint = x_valid[:, :, None] & y_valid[:, None, :]
  return jnp.where(joint, cost, 0.0)


def ipot(cost: jax.Array, x_valid: jax.Array, y_valid: jax.Array, *, beta: float = 0.5,
         iterations: int = 50) -> jax.Array:
  """[B,Ly,Lx] transport plan for cost [B,Lx,Ly] (uniform marginals over the valid tokens).

  Per spec §4.2 with x = text (σ side, m tokens) and y = video (δ side, n tokens); invalid
  tokens get a 1e4 penalty in the denominators and the plan is zeroed on them."""
  cost = jax.lax.stop_gradient(cost.astype(jnp.float32))
  joint_t = (x_valid[:, :, None] & y_valid[:, None, :]).transpose(0, 2, 1)   # [B,Ly,Lx]
  m = jnp.sum(x_valid, axis=1).astype(jnp.float32)[:, None, None]
  n = jnp.sum(y_valid, axis=1).astype(jnp.float32)[:, None, None]
  x_pad = (~x_valid).astype(jnp.float32)[:, :, None]                       # [B,Lx,1]
  y_pad = (~y_valid).astype(jnp.float32)[:, None, :]                       # [B,1,Ly]
  sigma = x_valid.astype(jnp.float32)[:, :, None] / m                       # [B,Lx,1]
  plan = jnp.where(joint_t, 1.0, 0.0)
  a = jnp.where(joint_t, jnp.exp(-cost.transpose(0, 2, 1) / beta), 0.0)

  def body(_, carry):
    plan, sigma = carry
    q = a * plan                                                            # [B,Ly,Lx]
    delta = 1.0 / (n * jnp.swapaxes(q @ sigma, 1, 2) + 1e4 * y_pad)        # [B,1,Ly]
    sigma = 1.0 / (m * jnp.swapaxes(delta @ q, 1, 2) + 1e4 * x_pad)         # [B,Lx,1]
    plan = jnp.swapaxes(delta, 1, 2) * q * jnp.swapaxes(sigma, 1, 2)
    return plan, sigma

  plan, _ = jax.lax.fori_loop(0, iterations, body, (plan, sigma))
  return jnp.where(joint_t, plan, 0.0)


def ot_distance(cost: jax.Array, plan: jax.Array) -> jax.Array:
  """[B] trace(cost_b @ plan_b); differentiable in `cost` only (the plan is detached)."""
  return jnp.einsum("bij,bji->b", cost, jax.lax.stop_gradient(plan))


def wpa_masks(text_mask: jax.Array, num_video_tokens: int, *,
              skip_second_video_token: bool) -> tuple[jax.Array, jax.Array]:
  """(text_valid [B,L], video_valid [B,l]) booleans of spec §4.2.

  Text: the attention mask minus [CLS] (index 0) and the last real token ([SEP], index len-1).
  Video: all tokens but the video CLS (index 0), and index 1 too under the reference's 'deit'
  rule (`"deit" in config["vit"]`: the DIST token of S, simply the first patch slot of Ti)."""
  text_mask = text_mask.astype(bool)
  b, length = text_mask.shape
  pos = jnp.arange(length)[None, :]
  last = jnp.sum(text_mask, axis=1, keepdims=True) - 1
  text_valid = text_mask & (pos != 0) & (pos != last)
  first = 2 if skip_second_video_token else 1
  video_valid = jnp.broadcast_to(jnp.arange(num_video_tokens)[None, :] >= first,
                                 (b, num_video_tokens))
  return text_valid, video_valid


def wpa(text_feats: jax.Array, video_feats: jax.Array, text_mask: jax.Array, *,
        skip_second_video_token: bool, beta: float = 0.5,
        iterations: int = 50) -> dict[str, jax.Array]:
  """Word-patch alignment: cost, plan, per-sample distance and the masks used."""
  tv, vv = wpa_masks(text_mask, video_feats.shape[1],
                     skip_second_video_token=skip_second_video_token)
  cost = cosine_cost(text_feats, video_feats, tv, vv)
  plan = ipot(cost, tv, vv, beta=beta, iterations=iterations)
  return dict(cost=cost, plan=plan, distance=ot_distance(cost, plan), text_valid=tv,
              video_valid=vv)


def wpa_loss(distance: jax.Array, itm_labels: jax.Array, scale: float = 0.1) -> jax.Array:
  """scale * (Σ_{matched} d - Σ_{unmatched} d) / B: pull matched pairs together, push the rest."""
  sign = jnp.where(itm_labels == 1, 1.0, -1.0)
  return scale * jnp.sum(sign * distance) / distance.shape[0]
