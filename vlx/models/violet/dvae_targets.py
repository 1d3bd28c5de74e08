"""VIOLET MVM targets (spec §5.5): DALL-E dVAE token ids per visual token, [B, T, h, w].

Two sources, chosen per batch:
  * the batch key `vq_tokens` (a token dataset read by the `token_grid` reader aligned with the
    sampled frames; `python -m vlx.tokenize`), used as given;
  * else on the fly: the model's frozen `dvae` submodule (config.model.dvae.enabled) on the clip
    un-normalised back to [0, 1], each frame resized to h*8 px (vlx.layers.dvae.frame_tokens).
    The reference tokenises the padded-to-square source frame resized straight to 56 px; here
    the frame is the pipeline's already resized clip (224 -> 56 at release sizes), a second
    resampling of the same square image.
`prepare_fresh_state` (family hook) loads OpenAI's converted encoder into `dvae` at a fresh
start; `frozen_params` (r"^dvae/") keeps it out of training.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from vlx.data.video_ops import NORMS

KEY = "vq_tokens"
PREFIX = "dvae/"


def unnormalise(video: jax.Array, norm: str = "imagenet") -> jax.Array:
  """Normalised video [..., 3] -> raw pixels in [0, 1] (float32)."""
  mean, std = (jnp.asarray(v, jnp.float32) for v in NORMS[norm])
  return jnp.clip(video.astype(jnp.float32) * std + mean, 0.0, 1.0)


def targets(model, batch: dict, grid: tuple[int, int], *, norm: str = "imagenet") -> jax.Array:
  """int32 [B, T, h, w] MVM targets of the UNMASKED clip `batch['video']` (no gradient)."""
  video = batch["video"]
  b, t = video.shape[:2]
  want = (b, t) + tuple(grid)
  if KEY in batch:
    vq = batch[KEY]
    if tuple(vq.shape) != want:
      raise ValueError(f"batch key {KEY!r} has shape {tuple(vq.shape)}, expected {want} "
                       "(frames x visual tokens of the clip: the token_grid input's num_frames, "
                       "height and width, with align_with='video')")
    return vq.astype(jnp.int32)
  dvae = getattr(model, "dvae", None)
  if dvae is None:
    raise ValueError("objective 'mvm' needs targets: set config.model.dvae.enabled=True (the "
                     "frozen dVAE tokenises the clip in the step) or read a token dataset as "
                     "data.train.inputs.vq_tokens (reader 'token_grid')")
  if grid[0] != grid[1]:
    raise ValueError(f"on-the-fly MVM targets need square frames, got {grid[0]}x{grid[1]} "
                     "visual tokens")
  from vlx.layers import dvae as dvae_lib  # pylint: disable=import-outside-toplevel
  tokens = dvae_lib.frame_tokens(dvae, unnormalise(jax.lax.stop_gradient(video), norm), grid[0])
  return jax.lax.stop_gradient(tokens).astype(jnp.int32)


def _dvae_source(flat: dict) -> dict:
  """The encoder's arrays of a converted dir: a bare DalleEncoder (keys at the top level, the
  converter's 'dalle_encoder' variant) or a model with a `dvae/` subtree."""
  sub = {k[len(PREFIX):]: v for k, v in flat.items() if k.startswith(PREFIX)}
  return sub or flat


def load_dvae(dvae: nnx.Module, path: str) -> int:
  """Copies the converted encoder at `path` into `dvae` in place; every parameter must be found
  with its shape. Returns the number of arrays loaded."""
  from vlx import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
  source = _dvae_source(ckpt.load_params_flat(path, "config.model.dvae.converted"))
  return ckpt.fill_module(
      dvae, source, f"config.model.dvae.converted={path!r} does not fit model.dvae",
      "convert OpenAI's encoder.pkl with `python -m vlx.convert --family violet`; "
      "config.model.dvae sizes must match it")


def condition_random(dvae: nnx.Module, seed: int, *, size: int = 32, count: int = 64,
                     gain: float = 10.0) -> None:
  """Makes a RANDOMLY initialised dVAE's codes informative, in place (demos and tests only).

  With random weights nearly every position has the same argmax code, so MVM would predict a
  constant. As the reference's tiny_dalle fixture was made: the mean direction of the output
  conv's input features (ReLU(group_G) on seeded noise images) is projected out of the output
  kernel, which is then scaled by `gain`; its bias becomes 0.01 N(0, 1)."""
  from vlx.layers import dvae as dvae_lib  # pylint: disable=import-outside-toplevel
  k_img, k_bias = jax.random.split(jax.random.key(seed), 2)
  pixels = jax.random.uniform(k_img, (count, size, size, 3))
  _, acts = dvae(dvae_lib.map_pixels(pixels), return_activations=True)
  feats = jax.nn.relu(acts[f"group_{dvae.group_count}"].astype(jnp.float32))
  u = jnp.mean(feats.reshape(-1, feats.shape[-1]), axis=0)
  u = u / jnp.maximum(jnp.linalg.norm(u), 1e-12)
  kernel = dvae.output.kernel[...]                      # [1, 1, C, vocab]
  w = kernel[0, 0].astype(jnp.float32)
  w = gain * (w - jnp.outer(u, u @ w))
  dvae.output.kernel[...] = w[None, None].astype(kernel.dtype)
  bias = dvae.output.bias[...]
  dvae.output.bias[...] = (0.01 * jax.random.normal(k_bias, bias.shape)).astype(bias.dtype)


def check_config(config: ml_collections.ConfigDict) -> None:
  """The dVAE's vocabulary is the MVM head's (validate_config may call this)."""
  m = config.model
  d = m.get("dvae", None)
  if d is not None and d.get("enabled", False) and d.vocab_size != m.mvm_vocab:
    raise ValueError(f"config.model.dvae.vocab_size={d.vocab_size} must equal "
                     f"config.model.mvm_vocab={m.mvm_vocab}: MVM predicts the dVAE's tokens")


def prepare_fresh_state(model, config: ml_collections.ConfigDict) -> None:
  """Family hook after a fresh init: with config.model.dvae.enabled, load
  config.model.dvae.converted (a `python -m vlx.convert` dir of encoder.pkl) into model.dvae;
  without it (and without config.init weights) the dVAE stays random, its output layer
  conditioned by `condition_random` (a warning: MVM then learns a random tokeniser's codes,
  enough for demos and tests)."""
  d = config.model.get("dvae", None)
  if d is None or not d.get("enabled", False) or getattr(model, "dvae", None) is None:
    return
  check_config(config)
  path = d.get("converted", "")
  if path:
    n = load_dvae(model.dvae, path)
    logging.info("loaded %d dVAE arrays from %s (MVM targets)", n, path)
    return
  init = config.get("init", {})
  from_init = bool(init.get("from_checkpoint") or init.get("from_converted"))
  if not from_init:
    condition_random(model.dvae, int(config.seed))
  source = ("the dVAE of config.init if it holds a dvae/ subtree (a vlx VIOLET run), else a "
            "RANDOMLY initialised one" if from_init
            else "a RANDOMLY initialised dVAE (output layer conditioned for varied codes)")
  logging.warning("config.model.dvae.converted is empty: MVM targets come from %s (convert "
                  "OpenAI's encoder.pkl with `python -m vlx.convert --family violet` and set "
                  "config.model.dvae.converted for the paper's targets)", source)
