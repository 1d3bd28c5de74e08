"""The CLIP image tower as a jitted function of fixed-size batches: pixels -> features [B, D].

Frames are brought to the tower's square input on the host (`host_preprocess`: CLIP's resize of
the short side, bicubic antialiased, and centre crop, the arithmetic of vlx.layers.clip.preprocess
in numpy), so every batch has one shape and the tower compiles once. On the device:
normalize_images + ClipVisionTower (CLIP's `encode_image`, not L2-normalised; the `features`
reader's `normalize=True` L2-normalises per step, as EAO's loader does).
Weights: OpenAI's released TorchScript `.pt` or an open_clip / torch state dict (read as data,
vlx.layers.clip_rules.read_checkpoint + load), or random (`random_tower`: demos, tests and
benchmarks; the features mean nothing).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.cli import PathError, UserError
from vlx.layers import clip

PRESETS = {
    "ViT-B/32": clip.ClipConfig(),
    # tests / demos: 32 px input (patches of 8), two narrow blocks
    "tiny": clip.ClipConfig(embed_dim=32, image_size=32, patch_size=8, vision_width=64,
                            vision_layers=2, vision_heads=2),
}


class TowerError(UserError):
  """The CLIP weights cannot be used (not a ViT CLIP state dict, unreadable file)."""


@dataclasses.dataclass(frozen=True)
class Tower:
  """`fn(pixels float32 [B, S, S, 3] in [0, 1]) -> features` (jitted, asynchronous), its input
  side S, the feature size D and a description of the weights for the fingerprint."""
  fn: Callable[[np.ndarray], jax.Array]
  size: int
  dim: int
  description: str
  module: clip.ClipVisionTower


def _dtype(dtype: str):
  return {"float32": None, "bfloat16": jnp.bfloat16}[dtype]


def jitted(module: clip.ClipVisionTower) -> Callable[[np.ndarray], jax.Array]:
  """A jitted features function over the module's state (one compile per batch shape)."""
  graphdef, state = nnx.split(module)

  @jax.jit
  def run(st, pixels):
    return nnx.merge(graphdef, st)(clip.normalize_images(pixels)).astype(jnp.float32)

  return lambda pixels: run(state, pixels)


def _tower(module: clip.ClipVisionTower, description: str) -> Tower:
  return Tower(jitted(module), module.grid * module.patch_size, int(module.proj.shape[1]),
               description, module)


def random_tower(preset: str = "ViT-B/32", dtype: str = "float32", seed: int = 0) -> Tower:
  """An image tower of `preset`'s sizes with random weights drawn with numpy from `seed` (no
  device init: compiling an init costs tens of seconds on a CPU): kernels N(0, 1 / fan_in),
  embeddings and projections N(0, 0.02^2), LayerNorm scale 1, biases 0."""
  if preset not in PRESETS:
    raise UserError(f"--clip_preset={preset!r}: expected one of {sorted(PRESETS)}")
  cfg = PRESETS[preset]
  abstract = nnx.eval_shape(lambda: clip.ClipVisionTower(cfg, dtype=_dtype(dtype),
                                                         rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
    if name == "scale":
      return np.ones(leaf.shape, leaf.dtype)
    if name == "bias":
      return np.zeros(leaf.shape, leaf.dtype)
    std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.02
    return (rng.standard_normal(leaf.shape) * std).astype(leaf.dtype)

  pure = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  fields = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
  return _tower(nnx.merge(graphdef, state), f"random(preset={preset}, seed={seed}, {fields})")


def _digest(path: str) -> str:
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
      h.update(chunk)
  return h.hexdigest()[:12]


def _prefix(state: dict) -> str:
  """The literal prefix of the CLIP keys ('' or e.g. 'module.')."""
  for key in state:
    if key.endswith("visual.conv1.weight"):
      return key[:-len("visual.conv1.weight")]
  raise TowerError("no visual.conv1.weight key: not a ViT CLIP state dict (e.g. "
                   f"{sorted(state)[:4]})")


def loaded_tower(path: str, variant: str = "openai", dtype: str = "float32",
                 head_width: int = 64) -> Tower:
  """The image tower of a CLIP file: OpenAI's TorchScript `.pt` (variant 'openai') or an
  open_clip state dict ('open_clip': GELU; 'openai' for its *-quickgelu configs). Heads are
  width // head_width (64 in every CLIP release)."""
  from vlx.convert.errors import ConversionError  # pylint: disable=import-outside-toplevel
  from vlx.layers import clip_rules  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise PathError(f"--clip {path}: no such file (OpenAI's ViT-B-32.pt or an open_clip state "
                    "dict)")
  try:
    state = clip_rules.read_checkpoint(path)
    if isinstance(state.get("state_dict"), dict):   # a training checkpoint's container
      state = state["state_dict"]
    model = clip_rules.load(state, variant=variant, src=_prefix(state), dtype=_dtype(dtype),
                            head_width=head_width)
  except (ValueError, KeyError, OSError, ConversionError) as e:
    detail = (str(e).splitlines() or [type(e).__name__])[0].removeprefix(f"{path}: ")
    raise TowerError(f"--clip {path}: {detail}"
                     ) from e
  return _tower(model.visual, f"{os.path.basename(path)} sha1 {_digest(path)} ({variant}, "
                f"head_width {head_width})")


@functools.lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int) -> np.ndarray:
  return clip.bicubic_aa_matrix(n_in, n_out).astype(np.float32)


def host_preprocess(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, H, W, 3] -> float32 [N, size, size, 3] in [0, 1]: vlx.layers.clip.preprocess
  without its normalisation (done on the device), in numpy."""
  frames = np.asarray(frames)
  n, h, w = frames.shape[:3]
  short, long = min(h, w), max(h, w)
  scaled = (size, int(size * long / short)) if h <= w else (int(size * long / short), size)
  x = frames.astype(np.float32)
  if (h, w) != scaled:
    x = np.einsum("ih,nhwc->niwc", _matrix(h, scaled[0]), x, optimize=True)
    x = np.einsum("jw,niwc->nijc", _matrix(w, scaled[1]), x, optimize=True)
  top, left = int(round((scaled[0] - size) / 2.0)), int(round((scaled[1] - size) / 2.0))
  x = np.clip(x[:, top:top + size, left:left + size], 0.0, 255.0) / 255.0
  return np.ascontiguousarray(x, np.float32).reshape(n, size, size, 3)
