"""BERT pieces: embeddings, post-LN layer, an encoder that runs any layer range, MLM head.

The encoder exposes `embed` and `run_layers(x, mask, start, end)` separately because ALPRO (and
other single-stream models) run the first layers on text alone and the rest on a concatenated
text+video sequence without new embeddings.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import Attention, additive_mask
from vlx.layers.mlp import Mlp

_EMBED_INIT = nnx.initializers.normal(stddev=0.02)


def _embed(n: int, d: int, names, *, dtype, param_dtype, rngs) -> nnx.Embed:
  return nnx.Embed(n, d, dtype=common.as_dtype(dtype), param_dtype=common.as_dtype(param_dtype),
                   embedding_init=nnx.with_partitioning(_EMBED_INIT, names), rngs=rngs)


class BertEmbeddings(nnx.Module):
  """word[ids] + position[0..L) + token_type[0 or given] -> LayerNorm -> dropout."""

  def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int,
               *, ln_eps: float, dropout: float, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.word = _embed(vocab_size, hidden, ("vocab", "embed"), **kw)
    self.position = _embed(max_positions, hidden, (None, "embed"), **kw)
    self.token_type = _embed(type_vocab_size, hidden, (None, "embed"), **kw)
    self.norm = common.layer_norm(hidden, ln_eps, **kw)
    self.dropout = dropout
    self.max_positions = max_positions

  def __call__(self, ids: jax.Array, token_type_ids: jax.Array | None = None, *,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    length = ids.shape[-1]
    if length > self.max_positions:
      raise ValueError(f"text length {length} exceeds max_position_embeddings={self.max_positions}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(ids)
    x = self.word(ids) + self.token_type(token_type_ids) + self.position(jnp.arange(length))[None]
    x = self.norm(x)
    return common.dropout(x, self.dropout, deterministic=deterministic, rngs=rngs)


class BertLayer(nnx.Module):
  """Post-LN: a = LN(x + drop(attn(x))); out = LN(a + drop(fc2(gelu(fc1(a)))))."""

  def __init__(self, hidden: int, num_heads: int, intermediate: int, *, ln_eps: float,
               dropout: float, attn_dropout: float, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn = Attention(hidden, num_heads, attn_dropout=attn_dropout, **kw)
    self.attn_norm = common.layer_norm(hidden, ln_eps, **kw)
    self.mlp = Mlp(hidden, intermediate, hidden, activation="gelu", **kw)
    self.mlp_norm = common.layer_norm(hidden, ln_eps, **kw)
    self.dropout = dropout

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, return_probs: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """`return_probs`: also the attention probabilities [B, H, L, L] (Attention.return_probs)."""
    drop = lambda y: common.dropout(y, self.dropout, deterministic=deterministic, rngs=rngs)
    a = self.attn(x, mask=mask, deterministic=deterministic, rngs=rngs, return_probs=return_probs)
    a, probs = a if return_probs else (a, None)
    x = self.attn_norm(x + drop(a))
    out = self.mlp_norm(x + drop(self.mlp(x)))
    return (out, probs) if return_probs else out


class BertEncoder(nnx.Module):
  """Embeddings + a list of BertLayers; `__call__` runs [start, end) on token ids."""

  def __init__(self, *, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
               intermediate_size: int, max_position_embeddings: int, type_vocab_size: int = 2,
               ln_eps: float = 1e-12, dropout: float = 0.1, attn_dropout: float = 0.1,
               remat: bool = False, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings,
                                     type_vocab_size, ln_eps=ln_eps, dropout=dropout, **kw)
    self.layers = nnx.List([
        BertLayer(hidden_size, num_heads, intermediate_size, ln_eps=ln_eps, dropout=dropout,
                  attn_dropout=attn_dropout, **kw) for _ in range(num_layers)])
    self.remat = remat

  def run_layers(self, x: jax.Array, mask: jax.Array | None, start: int = 0,
                 end: int | None = None, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
    """Layers [start, end) on hidden states x [B, L, D]; mask is the 0/1 padding mask [B, L]."""
    end = len(self.layers) if end is None else end
    add = None if mask is None else additive_mask(mask)
    call = lambda layer, h, r: layer(h, add, deterministic=deterministic, rngs=r)
    return common.run_blocks(list(self.layers)[start:end], x, call, remat=self.remat, rngs=rngs)

  def __call__(self, ids: jax.Array, mask: jax.Array, start: int = 0, end: int | None = None, *,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    x = self.embeddings(ids, deterministic=deterministic, rngs=rngs)
    return self.run_layers(x, mask, start, end, deterministic=deterministic, rngs=rngs)


class MlmHead(nnx.Module):
  """dense -> GELU -> LN -> x @ decoder + bias.

  The decoder is the word embedding matrix passed at call time (tied, BERT/ALPRO) or, with
  `tied=False`, an own bias-free `decoder` Linear(hidden, vocab) (e.g. All-in-one's MLM head).
  """

  def __init__(self, hidden: int, vocab_size: int, *, ln_eps: float, tied: bool = True,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dense = common.linear(hidden, hidden, ("embed", "mlp"), **kw)
    self.norm = common.layer_norm(hidden, ln_eps, **kw)
    if not tied:
      self.decoder = common.linear(hidden, vocab_size, ("embed", "vocab"), use_bias=False, **kw)
    self.bias = nnx.Param(jnp.zeros((vocab_size,), common.as_dtype(param_dtype)))
    self.dtype = common.as_dtype(dtype)

  def __call__(self, x: jax.Array, word_embedding: jax.Array | None = None) -> jax.Array:
    """Returns float32 logits [..., vocab] (losses run in float32)."""
    if hasattr(self, "decoder") and word_embedding is not None:
      raise ValueError("this MlmHead has its own (untied) decoder: pass no word_embedding")
    if not hasattr(self, "decoder") and word_embedding is None:
      raise ValueError("a tied MlmHead needs the word embedding matrix [vocab, hidden]")
    h = self.norm(common.gelu(self.dense(x)))
    if hasattr(self, "decoder"):
      return self.decoder(h).astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    dt = self.dtype or h.dtype
    logits = jnp.einsum("...d,vd->...v", h.astype(dt), word_embedding.astype(dt),
                        preferred_element_type=jnp.float32)
    return logits.astype(jnp.float32) + self.bias[...].astype(jnp.float32)
