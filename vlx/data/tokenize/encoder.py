"""The token function: float32 pixels [N, P, P, 3] in [0, 1] -> int32 codes [N, P/8, P/8].

Built from the DALL-E dVAE encoder (vlx.layers.dvae: `DalleEncoder`, `tokens` = map_pixels +
encoder + argmax), jitted once for the fixed batch shape. Weights: a `python -m vlx.convert`
output of `encoder.pkl` (its model_config names the family whose `build` makes the module; the
DalleEncoder inside it is used), or a random init (demos, tests, benchmarks).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.cli import PathError, UserError

TokenFn = Callable[[np.ndarray], jax.Array]
RELEASE = dict(n_hid=256, n_blk_per_group=2, input_channels=3, vocab_size=8192)


class EncoderError(UserError):
  """The encoder weights cannot be used (missing folder, not a converted dVAE encoder)."""


@dataclasses.dataclass(frozen=True)
class Encoder:
  """`fn` (jitted, asynchronous: returns a device array) and a description for the fingerprint."""
  fn: TokenFn
  description: str
  vocab_size: int


def dvae_module():
  """vlx.layers.dvae (the JAX DALL-E encoder)."""
  try:
    from vlx.layers import dvae  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError(f"the dVAE encoder (vlx.layers.dvae) cannot be imported: {e}") from e
  return dvae


def jitted(module: nnx.Module) -> TokenFn:
  """A jitted `dvae.tokens(module, pixels)` over the module's state (one compile per shape)."""
  return dvae_module().tokenizer(module)


def random_encoder(dtype: str = "float32", seed: int = 0, **kwargs) -> Encoder:
  """Random weights (release sizes unless kwargs say otherwise): the package's init, kernels
  N(0, 1 / fan_in) and zero biases, drawn with numpy from `seed` (no device compile: an init
  under XLA costs tens of seconds on a CPU). The codes mean nothing: demos, tests, benchmarks."""
  dvae = dvae_module()
  cfg = {**RELEASE, **kwargs}
  abstract = nnx.eval_shape(lambda: dvae.DalleEncoder(**cfg, dtype=_jnp_dtype(dtype),
                                                      rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if str(path[-1].key) != "kernel":
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

  pure = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  module = nnx.merge(graphdef, state)
  return Encoder(jitted(module), f"random(seed={seed}, {json.dumps(cfg, sort_keys=True)})",
                 int(cfg["vocab_size"]))


def converted_encoder(path: str, dtype: str = "float32") -> Encoder:
  """The DalleEncoder of a `python -m vlx.convert` output folder (e.g. of encoder.pkl)."""
  from vlx import registry  # pylint: disable=import-outside-toplevel
  from vlx.convert import engine, store  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise PathError(f"--encoder {path}: no such folder (a `python -m vlx.convert --checkpoint "
                    "encoder.pkl --out DIR` output)")
  cfg = store.read_model_config(path)
  build = registry.get(cfg.family).build
  with cfg.unlocked():
    if "dtype" in cfg:
      cfg.dtype = dtype
  abstract = engine.abstract_model(build, cfg)  # no init: the weights come from the folder
  _, state = store.load_converted(path, target=nnx.state(abstract))
  model = nnx.merge(nnx.graphdef(abstract), state)
  dvae = dvae_module()
  module = find_encoder(model, dvae.DalleEncoder)
  if module is None:
    raise EncoderError(f"--encoder {path}: holds a {cfg.family} model without a DALL-E dVAE "
                       "encoder; convert encoder.pkl (`python -m vlx.convert --checkpoint "
                       "encoder.pkl --out DIR`)")
  if cfg.get("dtype", None) is None and dtype != "float32":
    raise EncoderError(f"--dtype={dtype}: the model config of {path} has no dtype field")
  report = os.path.join(path, "model_config.json")
  with open(report, "rb") as f:
    digest = hashlib.sha1(f.read()).hexdigest()[:12]
  return Encoder(jitted(module), f"converted({path}, model_config sha1 {digest})",
                 int(module.vocab_size))


def find_encoder(model: nnx.Module, cls: type) -> nnx.Module | None:
  """`model` itself or its first submodule of class `cls`."""
  for _, node in nnx.iter_graph(model):
    if isinstance(node, cls):
      return node
  return None


def _jnp_dtype(dtype: str):
  return {"float32": None, "bfloat16": jnp.bfloat16}[dtype]
