"""The DALL-E dVAE encoder fixture (reference tiny_dalle/): every array of its outputs.npz
recomputed with vlx's DalleEncoder from the fixture's weights.

Weights: `encoder.pkl` (the whole pickled dall_e module, read by vlx.convert.safe_pickle without
running it) or else `encoder_state_dict.pt`; sizes from the weight shapes (config.json, when
present, must agree). Inputs: inputs.npz `mapped` (already map_pixels'd) or `pixels` in [0, 1],
NCHW. Outputs use the reference layout: logits / act_* NCHW float32, tokens int64.
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.layers import dvae, dvae_rules

WEIGHT_FILES = ("encoder.pkl", "encoder_state_dict.pt")


def weights_file(fixture_dir) -> pathlib.Path:
  """encoder.pkl if present, else encoder_state_dict.pt."""
  d = pathlib.Path(fixture_dir)
  for name in WEIGHT_FILES:
    if (d / name).is_file():
      return d / name
  raise FileNotFoundError(f"{d}: no DALL-E encoder weights ({' or '.join(WEIGHT_FILES)})")


def _check_config(d: pathlib.Path, cfg: dict) -> None:
  """config.json (optional) must describe the same encoder as the weight shapes."""
  path = d / "config.json"
  if not path.is_file():
    return
  given = json.loads(path.read_text())
  wrong = {k: (given[k], v) for k, v in cfg.items() if k in given and int(given[k]) != v}
  if wrong:
    raise ValueError(f"{path}: disagrees with the weight shapes (field: (config, weights)): "
                     f"{wrong}")


def load_encoder(weights, *, dtype=None) -> dvae.DalleEncoder:
  """The fixture's DalleEncoder (vlx.layers.dvae_rules.load_encoder; config.json, when present,
  must agree with the shapes)."""
  model = dvae_rules.load_encoder(weights, dtype=dtype)
  cfg = {k: getattr(model, k) for k in ("vocab_size", "group_count")}
  cfg.update(n_hid=model.input.out_features, input_channels=model.input.in_features,
             n_blk_per_group=model.group_1.n_blocks)
  _check_config(pathlib.Path(weights).parent, cfg)
  return model


def fixture_inputs(fixture_dir) -> np.ndarray:
  """The encoder input, channels-last [N, S, S, C]: inputs.npz `mapped`, else map_pixels(pixels)."""
  x = np.load(pathlib.Path(fixture_dir) / "inputs.npz")
  if "mapped" in x:
    mapped = np.asarray(x["mapped"], np.float32)
  else:
    mapped = np.asarray(dvae.map_pixels(x["pixels"]))
  return mapped.transpose(0, 2, 3, 1)


@nnx.jit
def _forward(encoder: dvae.DalleEncoder, mapped: jax.Array):
  return encoder(mapped, return_activations=True)


def outputs(encoder: dvae.DalleEncoder, mapped: jax.Array) -> dict[str, np.ndarray]:
  """logits, tokens, act_* (NCHW, as the reference records them) and top2_gap_min."""
  logits, acts = _forward(encoder, mapped)
  nchw = lambda a: np.asarray(a, np.float32).transpose(0, 3, 1, 2)
  out = {"logits": nchw(logits), "tokens": np.asarray(jnp.argmax(logits, -1), np.int64)}
  out.update({f"act_{k}": nchw(v) for k, v in acts.items()})
  top2 = np.sort(out["logits"], axis=1)[:, -2:]
  out["top2_gap_min"] = np.asarray((top2[:, 1] - top2[:, 0]).min(), np.float32)
  return out


def compute_outputs(fixture_dir, *, weights=None, dtype=None) -> dict[str, np.ndarray]:
  """Every array of the fixture's outputs.npz, recomputed by vlx (`weights`: another weights
  file than the default of `weights_file`; `dtype`: compute dtype, e.g. 'bfloat16')."""
  encoder = load_encoder(weights or weights_file(fixture_dir), dtype=dtype)
  return outputs(encoder, jnp.asarray(fixture_inputs(fixture_dir)))
