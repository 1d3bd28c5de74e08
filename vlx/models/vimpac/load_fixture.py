"""Reference-fixture support for VIMPAC (the format of shared/reference/vimpac/tiny/README.md).

A `tiny`-style folder (checkpoint.pt + args.pickle, finetune_head.pt, config.json, inputs.npz)
gives the pre-training activations, heads, losses and gradient norms, the float64 re-run and the
fine-tuning evaluation; a `layouts/` folder (config.json naming `<tag>.pt` backbones, inputs.npz)
gives every variant's block-0 / final / pooled outputs. Sizes come from the checkpoint shapes and
the args, so other fixtures of the format (sizes, layouts, seeds) work too.

The mask-prediction / NCE losses are the training objectives' (vlx.models.vimpac.objectives).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.convert import engine
from vlx.models.vimpac import convert as vc
from vlx.models.vimpac.objectives import cross_entropy as _ce
from vlx.models.vimpac.objectives import mlm_loss, nce_logits, nce_loss

# tiny/README.md "Tolerances": activations / logits 1e-4; losses 1e-5; grad norms rtol 1e-4;
# NCE logits hold a -1e9 diagonal (rtol 1e-4 covers its float32 rounding); preds exact.
PARITY_TOLERANCES: tuple[tuple[str, float, float], ...] = (
    (r"ft_pred|.*_keys", 0.0, 0.0),
    (r".*grad_norm.*", 0.0, 1e-4),
    (r".*loss.*|mask_ratio|ft_accuracy", 1e-5, 1e-5),
    (r".*", 1e-4, 1e-4),
)
# parameters whose fine-tuning gradient norms the tiny fixture stores (tiny/README.md); a fixture
# names its own in outputs.npz `ft_grad_norm_keys` (config.json lists only the pre-training ones),
# which win (`ft_grad_keys`)
FT_GRAD_KEYS = ("cls_fc.weight", "backbone.cls_param",
                "backbone.positional_embedding.temporal_pos_embedding",
                "backbone.transformer.resblocks.0.attention_blocks.0.attentions.0.attention."
                "query.weight")

_CACHE: dict = {}


def _run(fn, model, *args, options: dict | None = None):
  """fn(model, *args) under jax.jit, one compile per (fn, graph, options)."""
  graphdef, state = nnx.split(model)
  key = (fn, graphdef, tuple(sorted((options or {}).items())))
  if key not in _CACHE:
    _CACHE[key] = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a),
                          compiler_options=options)
  return _CACHE[key](state, *args)


def _convert(source: dict, overrides: dict, what: str) -> engine.ConversionResult:
  res = engine.convert_with(vc, vc.build, "vimpac", source, model_config=overrides)
  return engine.require_complete(res, what)


def _torch_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  from vlx.convert import torch_io  # pylint: disable=import-outside-toplevel
  return {k: np.asarray(v) for k, v in torch_io.load_state_dict(path).items()}


def _pretrain(model, codes, labels, train_bn: bool = False):
  rec: dict[str, Any] = {}
  cls, x = model(codes, record=rec)
  rec["final_cls"], rec["final_x"] = cls, x
  rec["mlm_transform_out"] = model.mlm_head.transform(x)
  logits = model.mlm_logits(x)
  rec["mlm_logits"] = logits
  proj = model.cls_head(cls, train_bn=train_bn, record=rec, prefix="clshead_")
  rec["nce_proj"] = proj
  flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
  valid = flat_labels != -100
  nll = _ce(flat_logits, jnp.where(valid, flat_labels, 0))
  rec["mlm_nll_all"] = nll
  rec["mlm_loss"] = mlm_loss(logits, labels)[0]
  rec["mlm_correct"] = jnp.argmax(flat_logits, -1) == flat_labels
  rec["nce_loss"] = nce_loss(proj)
  rec["total_loss"] = rec["mlm_loss"] + rec["nce_loss"]
  return rec


def _total_loss(model, codes, labels):
  return _pretrain(model, codes, labels)["total_loss"]


def _grads(model, codes, labels):
  return nnx.grad(_total_loss)(model, codes, labels)


def _grad_norms(grads, res: engine.ConversionResult, keys, dtype) -> np.ndarray:
  """||grad|| per torch key (the target of its rule; transposes keep the norm), float64."""
  flat = {"/".join(map(str, p)): np.asarray(v.get_value(), dtype)
          for p, v in nnx.to_flat_state(grads)}
  out = []
  for k in keys:
    g = flat[res.sources[k][0][0]].astype(np.float64)
    out.append(np.sqrt(np.sum(g * g)))
  return np.asarray(out)


def _global_norm(grads) -> float:
  return float(np.sqrt(sum(np.sum(np.asarray(v.get_value(), np.float64) ** 2)
                           for _, v in nnx.to_flat_state(grads))))


def _finetune(model, codes, labels):
  cls, _ = model(codes)
  return {"ft_cls_feature": cls, "ft_logits": model.classify(cls)}


def _ft_loss(model, codes, labels):
  cls, _ = model(codes)
  return _ce(model.classify(cls), labels).mean()


# -- fixtures -------------------------------------------------------------------------------------
def _tiny_outputs(d: pathlib.Path, options: dict | None) -> dict[str, np.ndarray]:
  cfg = json.loads((d / "config.json").read_text())
  inp = dict(np.load(d / "inputs.npz"))
  source, _, overrides = vc.read_checkpoint(d)
  res = _convert(source, overrides, f"fixture {d}")
  codes = jnp.asarray(inp["masked_codes"], jnp.int32)
  labels = jnp.asarray(inp["mlm_labels"], jnp.int32)
  rec = {k: np.asarray(v) for k, v in _run(_pretrain, res.model, codes, labels,
                                            options=options).items()}
  out = {k: rec[k] for k in rec if k.startswith(("pos_", "embedded_", "block0_", "clshead_"))}
  last = res.model_config.layers - 1
  out["blockLast_cls"], out["blockLast_x"] = rec[f"block{last}_cls"], rec[f"block{last}_x"]
  for k in ("final_cls", "final_x", "mlm_transform_out", "nce_proj"):
    out[k] = rec[k]
  mask = inp["mlm_labels"].reshape(-1) != -100
  out["mlm_token_nll"] = rec["mlm_nll_all"][mask]
  logits = rec["mlm_logits"].reshape(-1, rec["mlm_logits"].shape[-1])
  out["mlm_logits_masked"] = logits[inp["mlm_logits_masked_flat_index"]]
  out["mlm_logits_probe"] = logits[inp["mlm_probe_mask"].reshape(-1)]
  for k in ("mlm_loss", "nce_loss", "total_loss"):
    out[k] = rec[k]
  out["mlm_accuracy_percent"] = np.float32(rec["mlm_correct"][mask].mean() * 100)
  out["mask_ratio"] = np.float32(mask.mean())
  z, la, lb = (np.asarray(t) for t in nce_logits(jnp.asarray(rec["nce_proj"])))
  out["nce_normalized"], out["nce_logits_a"], out["nce_logits_b"] = z, la, lb
  train = {k: np.asarray(v) for k, v in _run(
      lambda m, c, l: _pretrain(m, c, l, train_bn=True), res.model, codes, labels,
      options=options).items() if k in ("nce_proj", "nce_loss")}
  out["nce_proj_trainbn"] = train["nce_proj"]
  out["nce_logits_a_trainbn"] = np.asarray(nce_logits(jnp.asarray(train["nce_proj"]))[1])
  out["nce_loss_trainbn"] = train["nce_loss"]
  keys = list(cfg["grad_keys"])
  grads = _run(_grads, res.model, codes, labels, options=options)
  out["grad_norm_global"] = np.float64(_global_norm(grads))
  out["grad_norm_keys"] = np.asarray(keys)
  out["grad_norm_values"] = _grad_norms(grads, res, keys, np.float32)
  out.update(_float64_outputs(source, overrides, codes, labels, keys))
  out.update(_finetune_outputs(d, cfg, inp, source, overrides, options))
  return {k: (np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64
              and "float64" not in k and "grad_norm" not in k else np.asarray(v))
          for k, v in out.items()}


def _float64_outputs(source, overrides, codes, labels, keys) -> dict[str, np.ndarray]:
  """The reference model cast to float64 (float64 compute too): total loss and gradient norms."""
  with jax.enable_x64(True):
    res = _convert(source, dict(overrides, dtype="float64"), "fixture (float64)")
    graphdef, state = nnx.split(res.model)
    state64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), state)
    model = nnx.merge(graphdef, state64)
    loss, grads = jax.jit(lambda m: nnx.value_and_grad(_total_loss)(m, codes, labels))(model)
    return {"total_loss_float64": np.float64(loss),
            "grad_norm_values_float64": _grad_norms(grads, res, keys, np.float64),
            "grad_norm_global_float64": np.float64(_global_norm(grads))}


def _finetune_outputs(d, cfg, inp, source, overrides, options) -> dict[str, np.ndarray]:
  """Backbone (tables interpolated to the fine-tuning shape, spec §4) + finetune_head.pt."""
  ft_args = cfg["finetune_args"]
  sd = {k: v for k, v in source.items() if k.startswith("backbone.")}
  sd.update(_torch_file(d / "finetune_head.pt"))
  ov = dict(overrides, clip_len=int(ft_args["clip_len"]), frame_size=int(ft_args["frame_size"]))
  res = _convert(sd, ov, f"fixture {d} (fine-tuning)")
  pos = res.model.backbone.positional_embedding
  out = {"ft_interp_temporal_pos": np.asarray(pos.temporal_pos_embedding[...]),
         "ft_interp_height_pos": np.asarray(pos.height_pos_embedding[...]),
         "ft_interp_width_pos": np.asarray(pos.width_pos_embedding[...])}
  codes = inp["ft_codes"]
  b, views = codes.shape[:2]
  labels = inp["ft_labels"]
  flat = jnp.asarray(codes.reshape((b * views,) + codes.shape[2:]), jnp.int32)
  r = {k: np.asarray(v) for k, v in _run(_finetune, res.model, flat, None,
                                          options=options).items()}
  out.update(r)
  logits = r["ft_logits"].astype(np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  probs = np.exp(logp).reshape(b, views, -1).mean(1)
  out["ft_avg_probs"] = probs
  out["ft_pred"] = probs.argmax(-1).astype(np.int64)
  per_view = -logp[np.arange(b * views), np.repeat(labels, views)].reshape(b, views)
  out["ft_loss_per_video"] = per_view.mean(1)
  out["ft_accuracy"] = np.float32((out["ft_pred"] == labels).mean())
  v0 = jnp.asarray(codes[:, 0], jnp.int32)
  r0 = np.asarray(_run(_finetune, res.model, v0, None, options=options)["ft_logits"], np.float64)
  lp0 = r0 - r0.max(-1, keepdims=True)
  lp0 = lp0 - np.log(np.exp(lp0).sum(-1, keepdims=True))
  nll = -lp0[np.arange(b), labels]
  out["ft_train_loss_view0"] = nll.mean()
  out["ft_train_loss_view0_labelsmooth0.1"] = (0.9 * nll - 0.1 * lp0.mean(-1)).mean()
  grads = _run(lambda m, c, l: nnx.grad(_ft_loss)(m, c, l), res.model, v0,
               jnp.asarray(labels, jnp.int32), options=options)
  keys = ft_grad_keys(d)
  out["ft_grad_norm_keys"] = np.asarray(keys)
  out["ft_grad_norm_values"] = _grad_norms(grads, res, keys, np.float32)
  return out


def ft_grad_keys(d: pathlib.Path) -> tuple[str, ...]:
  """The fine-tuning gradient names the fixture checks: outputs.npz's `ft_grad_norm_keys` (the
  names, not the values, of the reference's outputs), else the tiny fixture's FT_GRAD_KEYS."""
  path = d / "outputs.npz"
  if path.is_file():
    with np.load(path) as ref:
      if "ft_grad_norm_keys" in ref.files:
        return tuple(str(k) for k in ref["ft_grad_norm_keys"])
  return FT_GRAD_KEYS


def _backbone(model, codes):
  rec: dict[str, Any] = {}
  cls, x = model(codes, record=rec)
  return {"block0_cls": rec["block0_cls"], "block0_x": rec["block0_x"], "final_cls": cls,
          "final_x": x, "pooling": x.mean(axis=(1, 2, 3))}


def _layouts_outputs(d: pathlib.Path, options: dict | None) -> dict[str, np.ndarray]:
  cfg = json.loads((d / "config.json").read_text())
  inp = np.load(d / "inputs.npz")
  out = {}
  for tag, entry in cfg.items():
    res = _convert(_torch_file(d / f"{tag}.pt"), vc.overrides_from_args(entry["args"]),
                   f"fixture {d / tag}.pt")
    codes = jnp.asarray(inp[f"{tag}__codes"], jnp.int32)
    for k, v in _run(_backbone, res.model, codes, options=options).items():
      out[f"{tag}__{k}"] = np.asarray(v)
  return out


def compute_fixture_outputs(fixture_dir, *, compiler_options: dict | None = None
                            ) -> dict[str, np.ndarray]:
  """Every output of the fixture folder: a `tiny`-style folder (checkpoint.pt) or a layouts/
  folder (config.json naming its backbone variants)."""
  d = pathlib.Path(fixture_dir)
  if not (d / "checkpoint.pt").is_file():
    return _layouts_outputs(d, compiler_options)
  return _tiny_outputs(d, compiler_options)
