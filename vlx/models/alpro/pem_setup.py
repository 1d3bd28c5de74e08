"""ALPRO stage 2 set-up (spec §5.4): load the trained prompter, build its entity prompt features.

Two-stage pre-training: stage 1 trains a `head='prompter'` model with VTC alone
(configs/alpro_prompter_pretrain.py); stage 2 (configs/alpro_pretrain.py with model.pem) loads it
into the `prompter/` subtree **without** its `*prompt_feat*` buffers (the reference skips them too:
they are never built while the prompter trains), then fills the features once from the entity
prompts. This runs only after a fresh init (`prepare_fresh_state`, family contract): the features
are model state and are saved in and restored from checkpoints.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from vlx import checkpoint as ckpt
from vlx.models.alpro import prompts

PROMPT_FEAT = "prompt_feat"


def prompter_source(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The prompter's own arrays, keyed like a `head='prompter'` model: a stage-2 run's
  `prompter/...` subtree when there is one, else the top level; prompt features dropped."""
  sub = {k[len("prompter/"):]: v for k, v in flat.items() if k.startswith("prompter/")}
  source = sub or flat
  return {k: v for k, v in source.items() if PROMPT_FEAT not in k}


def load_prompter(prompter: nnx.Module, path: str) -> int:
  """Copies the parameters of `path` (vlx workdir or converted dir) into `prompter` (in place);
  every prompter parameter must be found with its shape. Returns the number loaded."""
  source = prompter_source(ckpt.load_params_flat(path, "config.init.prompter"))
  n = ckpt.fill_module(
      prompter, source, f"config.init.prompter={path!r} does not fit model.prompter",
      "a run of configs/alpro_prompter_pretrain.py with the same model sizes, or a converted "
      "ALPRO prompter/pretrain checkpoint")
  logging.info("loaded %d prompter parameters from %s (prompt features skipped)", n, path)
  return n


def prompt_features(prompter: nnx.Module, config: ml_collections.ConfigDict
                    ) -> tuple[jax.Array, jax.Array]:
  """(video, image) prompt features [num_entities, embed_dim] of `prompter`, jitted once."""
  p = prompts.prompt_inputs(config)
  graphdef, state = nnx.split(prompter)

  @jax.jit
  def build(state, vi, vm, ii, im):
    m = nnx.merge(graphdef, state)
    m.build_prompt_features(vi, vm, ii, im, num_templates=len(prompts.VIDEO_TEMPLATES))
    return m.video_prompt_feat[...], m.image_prompt_feat[...]

  return build(state, *(jnp.asarray(p[k]) for k in (
      "video_prompt_ids", "video_prompt_mask", "image_prompt_ids", "image_prompt_mask")))


def prepare_fresh_state(model: nnx.Module, config: ml_collections.ConfigDict) -> None:
  """Family hook, after a fresh init (+ config.init loads): with model.pem, load
  config.init.prompter into model.prompter and build its prompt features. In place."""
  if not config.model.get("pem", False) or getattr(model, "head", None) != "pretrain":
    return
  init = config.get("init", {})
  path = init.get("prompter", "")
  if path:
    load_prompter(model.prompter, path)
  elif not (init.get("from_converted") or init.get("from_checkpoint")):
    raise ValueError("config.model.pem=True needs a trained prompter: set config.init.prompter "
                     "to the workdir of a configs/alpro_prompter_pretrain.py run (or a converted "
                     "prompter dir), or start from a checkpoint that has one")
  video, image = prompt_features(model.prompter, config)
  model.prompter.video_prompt_feat[...] = video
  model.prompter.image_prompt_feat[...] = image
  logging.info("built prompt features: %d entities x %d dims", video.shape[0], video.shape[1])
