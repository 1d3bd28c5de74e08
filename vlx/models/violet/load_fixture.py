"""Reference-fixture support for VIOLET (`python -m vlx.convert.parity --family violet`).

The `tiny` format (shared/reference/violet/tiny/README.md): config.json (the reference's option
names), checkpoint.pt (pre-training) and checkpoint_{retrieval,qamc,qaoe}.pt, inputs.npz,
outputs.npz. Sizes come from config.json and the checkpoint shapes (any fixture of the format);
weights go through the generic converter strictly. Masked inputs are rebuilt from the recorded
masks (masking.apply_masks) and checked against the recorded masked inputs. Gradient outputs
`grad__<key>` / `gradnorm__<key>` are written for the keys the fixture's outputs.npz names (every
key's norm when it has none), mapped back to the reference layout by the converter rules.
A directory of the `tiny_dalle` format (encoder.pkl or encoder_state_dict.pt, no checkpoint.pt)
goes to dalle_fixture.compute_outputs.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.convert import ConversionResult, convert_state_dict, load_state_dict, reverse
from vlx.convert.engine import require_complete
from vlx.data.video_ops import NORMS
from vlx.models.violet import forward, masking

_DALLE_FILES = ("encoder.pkl", "encoder_state_dict.pt")
_TASK_FILES = {"pretrain": "checkpoint.pt", "retrieval": "checkpoint_retrieval.pt",
               "qamc": "checkpoint_qamc.pt", "qaoe": "checkpoint_qaoe.pt"}


def _need(d: dict, key: str, where: str = "config.json") -> Any:
  if key not in d:
    raise KeyError(f"fixture {where}: missing key {key!r}")
  return d[key]


def model_overrides(cfg: dict, task: str) -> dict:
  """Model-config overrides from config.json for what the shapes cannot tell (attention heads,
  epsilons, dropout rates); every size comes from the checkpoint's shapes."""
  swin, bert = cfg.get("SwinTransformer3D", {}), _need(cfg, "BertConfig")
  if bert.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"BertConfig.hidden_act={bert['hidden_act']!r}; VIOLET uses 'gelu' (erf)")
  video = {k: tuple(swin[k]) for k in ("num_heads", "window_size") if k in swin}
  video.update({k: type_(swin[k]) for k, type_ in (("qkv_bias", bool), ("drop_path_rate", float))
                if k in swin})
  return dict(
      head=task, video=video,
      text=dict(num_heads=int(_need(bert, "num_attention_heads", "BertConfig")),
                ln_eps=float(bert.get("layer_norm_eps", 1e-12)),
                dropout=float(bert.get("hidden_dropout_prob", 0.1)),
                attn_dropout=float(bert.get("attention_probs_dropout_prob", 0.1))))


def convert_fixture(cfg: dict, task: str, sd: dict) -> ConversionResult:
  """A fixture checkpoint through the generic converter (strict)."""
  return require_complete(
      convert_state_dict("violet", sd, variant=task, model_config=model_overrides(cfg, task)),
      f"fixture {_TASK_FILES[task]}")


def normalize(video_bt3hw: np.ndarray) -> jax.Array:
  """Reference [B,T,3,H,W] in [0,1] -> vlx channels-last, ImageNet-normalised."""
  mean, std = (np.asarray(s, np.float32) for s in NORMS["imagenet"])
  v = np.transpose(np.asarray(video_bt3hw, np.float32), (0, 1, 3, 4, 2))
  return jnp.asarray((v - mean) / std)


def masked_inputs(x: dict) -> dict[str, jax.Array]:
  """Masked pre-training inputs rebuilt from mtm_mask / mvm_mask / vq_pt (masking.apply_masks),
  checked against the recorded txt_pt_masked / video_pt_masked / ans_mtm / ans_mvm."""
  video = normalize(x["video_pt"])
  b, t = x["mvm_mask"].shape[:2]
  h, w = x["mvm_mask"].shape[2:]
  vq = np.asarray(x["vq_pt"]).reshape(b, t, 1 + h * w)[:, :, 1:].reshape(b, t, h, w)
  video_m, ids_m, mtm_labels, mvm_labels = masking.apply_masks(
      video, jnp.asarray(x["txt_pt"], jnp.int32), jnp.asarray(x["mtm_mask"]),
      jnp.asarray(x["mvm_mask"]), jnp.asarray(vq, jnp.int32), patch=video.shape[2] // h)
  checks = (("txt_pt_masked", ids_m, x.get("txt_pt_masked"), 0),
            ("ans_mtm", mtm_labels, x.get("ans_mtm"), 0),
            ("ans_mvm", mvm_labels, x.get("ans_mvm"), 0),
            ("video_pt_masked", video_m,
             None if "video_pt_masked" not in x else normalize(x["video_pt_masked"]), 1e-5))
  for name, ours, ref, tol in checks:
    if ref is not None and not np.allclose(np.asarray(ours), np.asarray(ref), rtol=0, atol=tol):
      raise ValueError(f"fixture inputs.npz: {name} differs from the masks applied with "
                       "masking.apply_masks (mtm_mask / mvm_mask / vq_pt)")
  return dict(video_masked=video_m, ids_masked=ids_m, mtm_labels=mtm_labels,
              mvm_labels=mvm_labels, video=video)


def _channels_first(x: jax.Array) -> jax.Array:
  """[B,T,h,w,C] -> the reference's [B,C,T,h,w]."""
  return jnp.transpose(x, (0, 4, 1, 2, 3))


_CACHE: dict = {}


def _run(fn, modules: tuple, *args, options: dict | None = None):
  """fn(*modules, *args) under jax.jit (XLA `options`), compiled once per module structure and
  argument shapes: the four fixture models share their Video Swin program."""
  split = [nnx.split(m) for m in modules]
  graphdefs = tuple(g for g, _ in split)
  key = (fn, graphdefs, tuple(sorted((options or {}).items())))
  if key not in _CACHE:
    def pure(states, *a):
      return fn(*(nnx.merge(g, st) for g, st in zip(graphdefs, states)), *a)
    _CACHE[key] = jax.jit(pure, compiler_options=options)
  return _CACHE[key](tuple(st for _, st in split), *args)


def _encode(video_module, tokens_module, video):
  """Swin output, its stages (reference layout) and the video tokens of one video batch."""
  out, stages = video_module(video, return_stages=True)
  res = {f"swin_{k}": _channels_first(v) for k, v in stages.items()}
  res["swin_out"] = _channels_first(out)
  res["feat_img"] = tokens_module(out)
  return res


def _pretrain_step(model, video_masked, ids_masked, text_mask, vtm_neg, mtm_labels, mvm_labels):
  """Pre-training tensors, stage outputs and the gradients of loss_total (eval mode)."""
  def total(m):
    enc = _encode(m.video, m.video_tokens, video_masked)
    f = forward.pretrain_outputs(m, video_masked=None, ids_masked=ids_masked,
                                 text_mask=text_mask, vtm_neg=vtm_neg, mtm_labels=mtm_labels,
                                 mvm_labels=mvm_labels, feat_img=enc.pop("feat_img"))
    f.update(enc)
    return f["loss_total"], f
  (_, f), grads = nnx.value_and_grad(total, has_aux=True)(model)
  f["grads"] = grads
  return f


def _attention(model, feat_img, ids, text_mask):
  """att_masking: get_att on the unmasked inputs."""
  feat_txt = model.embed_text(ids)
  return model.attention_received(feat_img, forward.video_mask(feat_img), feat_txt, text_mask)


_PRETRAIN_NAMES = {"feat_img": "feat_img_pt", "feat_txt": "feat_txt_pt",
                   "cross_out": "cross_out_pt", "mask_img": "mask_img_pt"}


def pretrain_outputs(cfg: dict, x: dict, sd: dict, grad_names: tuple[list[str], list[str]],
                     options: dict | None = None) -> dict[str, Any]:
  result = convert_fixture(cfg, "pretrain", sd)
  model = result.model
  m = masked_inputs(x)
  text_mask = jnp.asarray(x["mask_pt"], jnp.int32)
  out = _run(_pretrain_step, (model,), m["video_masked"], m["ids_masked"], text_mask,
             jnp.asarray(x["vtm_neg"], jnp.int32), m["mtm_labels"], m["mvm_labels"],
             options=options)
  unmasked = _run(_encode, (model.video, model.video_tokens), m["video"], options=options)
  out["att_masking"] = _run(_attention, (model,), unmasked["feat_img"],
                            jnp.asarray(x["txt_pt"], jnp.int32), text_mask, options=options)
  grads = {"/".join(str(q) for q in k): np.asarray(v[...])
           for k, v in nnx.to_flat_state(out.pop("grads"))}
  ref_grads = reverse.source_gradients(result, sd, grads)
  full, norms = grad_names
  if not full and not norms:
    norms = list(ref_grads)
  for name in full + norms:
    if name not in ref_grads:
      raise ValueError(f"fixture outputs.npz asks for the gradient of {name!r}, which is not "
                       "a trainable checkpoint key")
  res = {_PRETRAIN_NAMES.get(k, k): v for k, v in out.items() if not k.startswith("count_")}
  res.update({f"grad__{n}": ref_grads[n] for n in full})
  res.update({f"gradnorm__{n}": reverse.norm(ref_grads[n]) for n in norms})
  return res


def _retrieval(model, feat_img, ids, mask):
  feat_img, mask_img, feat_txt = forward.features(model, None, ids, feat_img=feat_img)
  scores = forward.all_pairs(model, feat_img, mask_img, feat_txt, mask) / forward.TEMPERATURE
  prob = forward.retrieval_eval_probs(model, feat_img, mask_img, feat_txt, mask)
  return dict(ret_feat_img=feat_img, ret_feat_txt=feat_txt, ret_scores=scores,
              ret_loss=forward.retrieval_loss(scores), ret_eval_prob=prob)


def rank_metrics(prob: np.ndarray) -> dict[str, np.ndarray]:
  """eval_retrieval's ranking: per text, videos sorted by -prob (stable: ties keep video order);
  rank = 1-based position of the text's own video; R@1/5/10 and int(median)."""
  order = np.argsort(-prob, axis=1, kind="stable")
  ranks = np.array([int(np.nonzero(order[t] == t)[0][0]) + 1 for t in range(prob.shape[0])],
                   np.int64)
  out = {f"ret_eval_r{k}": np.float32(np.mean(ranks <= k)) for k in (1, 5, 10)}
  out.update(ret_eval_rank_of_gt=ranks, ret_eval_median=np.int64(int(np.median(ranks))))
  return out


def _qa(model, feat_img, ids, mask, ans):
  """QA-MC (ids [B,O,X]) or QA-OE (ids [B,X]) logits, CE loss and argmax."""
  if ids.ndim == 3:
    logits = forward.qamc_logits(model, None, ids, mask, feat_img=feat_img)
  else:
    logits = forward.qaoe_logits(model, None, ids, mask, feat_img=feat_img)
  c = forward.classification(logits, ans)
  return dict(logits=logits, loss=c["loss"], pred=c["pred"])


def downstream_outputs(cfg: dict, x: dict, sd: dict, task: str,
                       options: dict | None = None) -> dict[str, Any]:
  """Retrieval / QA-MC / QA-OE outputs of the task's checkpoint (every model encodes all of
  video_ds with one compiled program; each task reads its first rows)."""
  model = convert_fixture(cfg, task, sd).model
  feat_all = _run(_encode, (model.video, model.video_tokens), normalize(x["video_ds"]),
                  options=options)["feat_img"]
  if task == "retrieval":
    ids = x["ret_txt"]
    out = _run(_retrieval, (model,), feat_all[:ids.shape[0]], jnp.asarray(ids, jnp.int32),
               jnp.asarray(x["ret_mask"], jnp.int32), options=options)
    out = {k: np.asarray(v) for k, v in out.items()}
    out.update(rank_metrics(out["ret_eval_prob"]))
    return out
  ids = x[f"{task}_txt"]
  out = _run(_qa, (model,), feat_all[:ids.shape[0]], jnp.asarray(ids, jnp.int32),
             jnp.asarray(x[f"{task}_mask"], jnp.int32), jnp.asarray(x[f"{task}_ans"], jnp.int32),
             options=options)
  return {f"{task}_{k}": v for k, v in out.items()}


def _grad_names(fixture_dir: pathlib.Path) -> tuple[list[str], list[str]]:
  """(full-gradient keys, gradient-norm keys) named by the fixture's outputs.npz, if any."""
  path = fixture_dir / "outputs.npz"
  if not path.exists():
    return [], []
  with np.load(path) as z:
    names = list(z.files)
  return ([n[len("grad__"):] for n in names if n.startswith("grad__")],
          [n[len("gradnorm__"):] for n in names if n.startswith("gradnorm__")])


def _as_reference(out: dict[str, Any]) -> dict[str, np.ndarray]:
  """Integer outputs as int64, everything else float32 (the fixture's dtypes)."""
  res = {}
  for k, v in out.items():
    a = np.asarray(v)
    res[k] = a.astype(np.int64) if a.dtype.kind in "iub" else a.astype(np.float32)
  return res


def compute_fixture_outputs(fixture_dir, *, compiler_options: dict | None = None
                            ) -> dict[str, np.ndarray]:
  """Every output of a fixture directory, recomputed with vlx (format detected from the files).
  `compiler_options`: XLA options of the compiled programs (tests: fast unoptimised builds)."""
  d = pathlib.Path(fixture_dir)
  if not (d / "checkpoint.pt").exists() and any((d / f).exists() for f in _DALLE_FILES):
    from vlx.models.violet import dalle_fixture  # pylint: disable=import-outside-toplevel
    return dalle_fixture.compute_outputs(d)
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "inputs.npz") as z:
    x = {k: z[k] for k in z.files}
  out = pretrain_outputs(cfg, x, load_state_dict(d / "checkpoint.pt"), _grad_names(d),
                         compiler_options)
  for task in ("retrieval", "qamc", "qaoe"):
    if (d / _TASK_FILES[task]).exists():
      out.update(downstream_outputs(cfg, x, load_state_dict(d / _TASK_FILES[task]), task,
                                    compiler_options))
  return _as_reference(out)
