"""Reference-fixture support for All-in-one (`python -m vlx.convert.parity --family allinone`).

A fixture directory holds config.json (the reference's sacred config, `_fixture_vit_kwargs` for
reduced ViTs), checkpoint.ckpt (a Lightning container, read with weights_only=True), inputs.npz and
outputs.npz. The model config comes from config.json only (any size / frame count / distilled or
not); the weights go through the generic converter, strictly (every key used or declared unused,
every variable filled). This module computes the core forward outputs (text_embeds ... ident_*);
the heads, losses and gradients come from `vlx.models.allinone.objectives.fixture_outputs`.
"""
from __future__ import annotations

import functools
import importlib
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx.convert import ConversionResult, convert_state_dict, load_state_dict, reverse
from vlx.convert.engine import require_complete
from vlx.models.allinone.model import AllInOne, model_config

# Released ViT factories (spec §1): name -> (img, patch, width, depth, heads, distilled).
FACTORIES = {
    "vit_deit_tiny_patch16_224": (224, 16, 192, 12, 3, False),
    "vit_deit_small_patch16_224": (224, 16, 384, 12, 6, False),
    "vit_deit_small_distilled_patch16_224": (224, 16, 384, 12, 6, True),
    "vit_base_patch16_224": (224, 16, 768, 12, 12, False),
}
def _need(d: dict, key: str, where: str = "config.json") -> Any:
  if key not in d:
    raise KeyError(f"fixture {where}: missing key {key!r}")
  return d[key]


def model_config_from_fixture(cfg: dict) -> ml_collections.ConfigDict:
  """AllInOne model config from a fixture's config.json (the reference's own option names)."""
  vit = str(_need(cfg, "vit"))
  kw = cfg.get("_fixture_vit_kwargs")
  if kw:
    img, patch, width, depth, heads, distilled = (
        int(_need(kw, "img_size", "_fixture_vit_kwargs")),
        int(_need(kw, "patch_size", "_fixture_vit_kwargs")),
        int(_need(kw, "embed_dim", "_fixture_vit_kwargs")),
        int(_need(kw, "depth", "_fixture_vit_kwargs")),
        int(_need(kw, "num_heads", "_fixture_vit_kwargs")), bool(kw.get("distilled", False)))
  elif vit in FACTORIES:
    img, patch, width, depth, heads, distilled = FACTORIES[vit]
  else:
    raise ValueError(f"config.json: vit={vit!r} is not a released factory {sorted(FACTORIES)} "
                     "and there is no _fixture_vit_kwargs")
  if int(_need(cfg, "hidden_size")) != width:
    raise ValueError(f"config.json: hidden_size={cfg['hidden_size']} differs from the ViT width "
                     f"{width} of {vit!r} (the reference requires them to agree)")
  losses = _need(cfg, "loss_names")
  on = lambda name: float(losses.get(name, 0)) > 0   # the reference creates heads for > 0
  c = model_config("B")
  c.update(variant="custom", img_size=img, patch_size=patch, hidden_size=width, num_layers=depth,
           num_heads=heads, distilled=distilled, deit="deit" in vit,
           mlp_ratio=float((kw or {}).get("mlp_ratio", 4.0)),
           vit_ln_eps=float((kw or {}).get("layer_norm_eps", 1e-6)),
           num_frames=int(_need(cfg, "num_frames")), vocab_size=int(_need(cfg, "vocab_size")),
           max_text_len=int(_need(cfg, "max_text_len")),
           drop_rate=float(cfg.get("drop_rate", 0.1)),
           shared_embedding_dim=int(cfg.get("shared_embedding_dim", 512)))
  c.heads.update(mlm=on("mlm"), itm=on("itm"), itc=on("ind_itc"), mc_vqa=on("mc_vqa"),
                 vcop=on("vcop"),
                 num_qa_labels=int(_need(cfg, "msrvttqa_label_size")) if on("openend_vqa") else 0)
  return c


def read_fixture(fixture_dir) -> tuple[dict, dict, dict]:
  """(config.json, inputs.npz, checkpoint.ckpt state dict) of a fixture directory."""
  d = pathlib.Path(fixture_dir)
  with np.load(d / "inputs.npz") as z:
    inputs = {k: z[k] for k in z.files}
  return json.loads((d / "config.json").read_text()), inputs, load_state_dict(
      d / "checkpoint.ckpt")


def convert_fixture(cfg: dict, sd: dict) -> ConversionResult:
  """The fixture's checkpoint through the generic converter; unmapped/missing keys are errors."""
  c = model_config_from_fixture(cfg)
  overrides = c.to_dict()
  overrides["heads"].pop("rank_untied")          # decided by the file's values
  return require_complete(convert_state_dict("allinone", sd, model_config=overrides),
                          "fixture checkpoint")


def build_from_fixture(cfg: dict, sd: dict) -> AllInOne:
  """The fixture's model (see convert_fixture)."""
  return convert_fixture(cfg, sd).model


def source_grads(result: ConversionResult, sd: dict):
  """{nnx path: gradient} -> {checkpoint key: gradient in its layout} for this conversion."""
  return functools.partial(reverse.source_gradients, result, sd)


def model_inputs(x: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """inputs.npz -> jnp: every *video [B,T,C,H,W] to channels-last [B,T,H,W,C]; ints to int32."""
  out = {}
  for k, v in x.items():
    if k.endswith("video"):
      out[k] = jnp.asarray(np.transpose(v, (0, 1, 3, 4, 2)), jnp.float32)
    elif np.issubdtype(v.dtype, np.integer):
      out[k] = jnp.asarray(v, jnp.int32)
    else:
      out[k] = jnp.asarray(v)
  return out


def _core(model: AllInOne, text_ids, text_mask, video, perm) -> dict[str, jax.Array]:
  """The core forward tensors, with `perm` (None: raster order)."""
  emb, masks = model.embed_video(video, perm)
  f = model.infer(text_ids, text_mask, video, patch_perm=perm, intermediates=True)
  out = {k: v for k, v in f.items() if k.startswith(("roll_", "block_"))}
  out.update(image_embeds=emb, image_masks=masks, final_norm_per_frame=f["final_norm_per_frame"],
             final_seq=jnp.concatenate([f["text_feats"], f["image_feats"]], axis=1),
             text_feats=f["text_feats"], image_feats=f["image_feats"], cls_feats=f["cls_feats"],
             raw_cls_feats=f["raw_cls_feats"], text_masks_out=f["text_masks"],
             image_masks_out=f["image_masks"])
  return out


_IDENT = ("image_embeds", "final_norm_per_frame", "final_seq", "text_feats", "image_feats",
          "cls_feats", "raw_cls_feats")


def core_outputs_fn(model: AllInOne, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Every core key of outputs.npz: recorded patch order, then identity (raster) order."""
  ids, mask, video = inputs["text_ids"], inputs["text_masks"], inputs["video"]
  out = {"text_embeds": model.embed_text(ids)}
  out.update(_core(model, ids, mask, video, inputs["video_patch_perm"]))
  ident = _core(model, ids, mask, video, None)
  out.update({f"ident_{k}": v for k, v in ident.items()
              if k in _IDENT or k.startswith("block_")})
  return out


core_outputs = nnx.jit(core_outputs_fn)


def _objectives_hook():
  """objectives.fixture_outputs of h-aio-tasks, or None while it does not exist."""
  name = "vlx.models.allinone.objectives"
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name and name.startswith(e.name):
      return None
    raise
  return getattr(module, "fixture_outputs", None)


def compute_fixture_outputs(fixture_dir) -> dict[str, np.ndarray]:
  """outputs.npz recomputed with vlx (eval mode, recorded patch orders and random draws)."""
  cfg, x, sd = read_fixture(fixture_dir)
  result = convert_fixture(cfg, sd)
  model = result.model
  inputs = model_inputs(x)
  out = {k: np.asarray(v) for k, v in core_outputs(model, inputs).items()}
  hook = _objectives_hook()
  if hook is not None:
    out.update({k: np.asarray(v) for k, v in hook(model, inputs, cfg,
                                                   source_grads(result, sd)).items()})
  return out
