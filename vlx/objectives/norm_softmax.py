"""Combinatorial NormSoftmax loss: contrastive terms between several embedding pairs, each on the
rows where every modality involved is present (spec of the tri-modal fusion family, §5).

NormSoftmax on a cosine matrix S [N, N] (fixed temperature τ): the **sum** of the two directions'
cross entropies, -mean_i log softmax_j(S/τ)[i, i] - mean_j log softmax_i(S/τ)[j, j]. Row selection
is done with masks instead of gathering (static shapes under jit): excluded rows and columns get a
logit far below any cosine/τ, so they receive zero probability and exactly zero gradient, which is
what dropping them does.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from vlx.objectives.cosine_contrastive import cosine_sim

_EXCLUDED = -1e9   # exp(-1e9 - max) underflows to exactly 0 in float32


def norm_softmax(sim: jax.Array, keep: jax.Array | None = None,
                 temperature: float = 0.05) -> jax.Array:
  """NormSoftmax of a square similarity matrix over the rows/columns with keep=True (all if None).
  With no row kept the loss is 0 (nothing to contrast)."""
  n = sim.shape[0]
  keep = jnp.ones((n,), bool) if keep is None else keep.astype(bool)
  valid = keep[:, None] & keep[None, :]
  z = jnp.where(valid, sim.astype(jnp.float32) / temperature, _EXCLUDED)
  rows = jnp.diagonal(jax.nn.log_softmax(z, axis=1))
  cols = jnp.diagonal(jax.nn.log_softmax(z, axis=0))
  k = keep.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(k), 1.0)
  return -(jnp.sum(rows * k) + jnp.sum(cols * k)) / count


# (pair name, first embedding, second embedding, modalities that must be present)
PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("tv", "text_embed", "video_embed", "tv"),
    ("ta", "text_embed", "audio_embed", "ta"),
    ("va", "video_embed", "audio_embed", "va"),
    ("t_va", "text_embed", "va_embed", "tva"),
    ("v_ta", "video_embed", "ta_embed", "tva"),
    ("a_tv", "audio_embed", "tv_embed", "tva"),
)
MODALITY = {"t": "text", "v": "video", "a": "audio"}


def combinatorial_loss(embeds: Mapping[str, jax.Array], nonempty: Mapping[str, jax.Array],
                       weights: Mapping[str, float], *, temperature: float = 0.05,
                       pairs: Sequence[tuple[str, str, str, str]] = PAIRS
                       ) -> dict[str, jax.Array]:
  """{pair: NormSoftmax loss, 'total': Σ w·L / Σ w} over the pairs with a non-zero weight whose
  two embeddings are in `embeds` ({'text_embed': [B, P], ...}); `nonempty` {'text': [B] bool, ...}
  selects each pair's rows (a missing modality mask = all present)."""
  out: dict[str, jax.Array] = {}
  total, wsum = jnp.zeros((), jnp.float32), 0.0
  for name, a, b, mods in pairs:
    w = float(weights.get(name, 0.0))
    if w == 0.0 or a not in embeds or b not in embeds:
      continue
    keep = jnp.ones((embeds[a].shape[0],), bool)
    for m in mods:
      if MODALITY[m] in nonempty:
        keep = keep & nonempty[MODALITY[m]].astype(bool)
    out[name] = norm_softmax(cosine_sim(embeds[a], embeds[b]), keep, temperature)
    total, wsum = total + w * out[name], wsum + w
  if wsum == 0.0:
    raise ValueError(f"combinatorial loss: no pair has a non-zero weight and both embeddings "
                     f"(weights {dict(weights)}, embeddings {sorted(embeds)})")
  out["total"] = total / wsum
  return out
