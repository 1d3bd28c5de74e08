"""Reference-fixture support for Everything-at-Once (the `tiny` format of
shared/reference/eao/tiny/README.md): config.json, checkpoint.pth (a trainer container),
inputs.npz, outputs.npz. Every output whose name outputs.npz lists is recomputed; which ones
(sims, metrics, losses, gradients, long-audio strategies, video sampling cases, clip evaluation)
is read from the names, sizes from the checkpoint shapes + config.json, so other fixtures of the
format (sizes, seeds, empty modalities) work too.
"""
from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.convert import engine, reverse
# the reference's metric.retrieval_metrics (diagonal ground truth, ties averaged), generic code
from vlx.evals.ranking import diagonal_metrics as retrieval_metrics
from vlx.models.eao import convert as ec
from vlx.objectives.cosine_contrastive import cosine_sim
from vlx.objectives.norm_softmax import combinatorial_loss

BATCH_KEYS = ("text", "text_mask", "video", "video_mask", "audio", "audio_mask",
              "audio_STFT_nframes")
CODES = {"t": "text", "v": "video", "a": "audio"}

# tiny/README.md "Reproducibility / tolerance", as `Family.parity_tolerances` rows (key regex,
# atol, rtol; 0, 0 = exact): masks, booleans and retrieval metrics exact, DAVEnet features atol
# 1e-3, everything else (tokens, embeddings, sims, losses, gradients) atol = rtol = 1e-4.
PARITY_TOLERANCES: tuple[tuple[str, float, float], ...] = (
    (r".*mask.*", 0.0, 0.0),
    (r"(?:clips_)?metrics_.*|metric_test_.*", 0.0, 0.0),
    (r"audio_davenet_features", 1e-3, 1e-4),
    (r".*", 1e-4, 1e-4),
)


# -- checkpoint -----------------------------------------------------------------------------------
def convert_fixture(fixture_dir: pathlib.Path, cfg: dict) -> tuple[engine.ConversionResult, dict]:
  """(strict conversion of checkpoint.pth, its flat state dict without `module.`)."""
  path = fixture_dir / "checkpoint.pth"
  sd, variant, overrides = ec.read_checkpoint(path)
  overrides.update(ec.overrides_from_container({"config": cfg}))
  res = engine.convert_with(ec, ec.build, "eao", sd, variant=variant, model_config=overrides)
  return engine.require_complete(res, f"fixture {path}"), sd


# -- compiled runs --------------------------------------------------------------------------------
_CACHE: dict = {}


def _run(fn, model, *args, static: tuple = (), options: dict | None = None):
  """fn(model, *args, *static) under jax.jit (XLA `options`), one compile per structure."""
  graphdef, state = nnx.split(model)
  key = (fn, graphdef, static, tuple(sorted((options or {}).items())))
  if key not in _CACHE:
    def pure(st, *a):
      return fn(nnx.merge(graphdef, st), *a, *static)
    _CACHE[key] = jax.jit(pure, compiler_options=options)
  return _CACHE[key](state, *args)


def _forward(model, batch, max_tokens, pooling):
  out = model(batch, force_cross_modal=True, return_intermediates=True,
              audio_max_tokens=max_tokens, audio_pooling=pooling)
  return out


def _losses(model, batch, weights, train, temperature):
  out = model(batch, train=train)
  nonempty = {m: out[f"{m}_nonempty_input_mask"] for m in CODES.values()
              if f"{m}_nonempty_input_mask" in out}
  return combinatorial_loss(out, nonempty, dict(weights), temperature=temperature)


def _grad_step(model, batch, weights, temperature):
  def total(m):
    return _losses(m, batch, weights, False, temperature)["total"]
  return nnx.grad(total)(model)


def _embed_name(code: str) -> str:
  return f"{CODES[code]}_embed" if code in CODES else f"{code}_embed"


def _split_task(task: str) -> tuple[str, str]:
  m = re.fullmatch(r"([tva+]+)2([tva+]+)", task)
  if not m:
    raise ValueError(f"fixture outputs.npz: cannot read retrieval task {task!r}")
  return m.group(1), m.group(2)


def _sims_and_metrics(emb: Mapping[str, np.ndarray], names: list[str], prefix: str,
                      complete_size: int) -> dict[str, np.ndarray]:
  """`<prefix>sim_<task>`, `<prefix>metrics_<task>`, `<prefix>metrics_completesize_<task>` for the
  names the fixture lists."""
  out = {}
  for name in names:
    for kind in ("sim_", "metrics_completesize_", "metrics_"):
      if name.startswith(prefix + kind):
        task = name[len(prefix + kind):]
        a, b = _split_task(task)
        sim = np.asarray(cosine_sim(jnp.asarray(emb[_embed_name(a)]),
                                    jnp.asarray(emb[_embed_name(b)])))
        if kind == "sim_":
          out[name] = sim
        else:
          out[name] = retrieval_metrics(sim, complete_size if "complete" in kind else None)
        break
  return out


# -- dataset-side sampling the fixture checks ----------------------------------------------------
def _l2(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _nearest(x: np.ndarray, size: int) -> np.ndarray:
  return x[(np.arange(size) * x.shape[0]) // size]


def video_features(feat_2d: np.ndarray | None, feat_3d: np.ndarray | None, n_tokens: int,
                   strategy: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-second features -> ([n_tokens, D] zero padded, mask), the fixture's dataset-side video
  sampling (matches every `pipe_*` case of the tiny fixture):
  * 'clip', or a sequence not longer than n_tokens: 2D resampled (nearest) to the 3D count, each
    part L2-normalised per token, [2D | 3D], the first n_tokens kept;
  * 'nearest' / 'max_pool' on longer sequences: each part separately (max_pool: max over windows
    of floor(len / n) steps when that is > 1), resampled (nearest) to n_tokens, then normalised.
  Whether the "longer" test uses the 3D or 2D count when they disagree is not settled by the
  fixture (3D here, 2D when there is no 3D)."""
  parts = [f for f in (feat_2d, feat_3d) if f is not None]
  if not parts:
    raise ValueError("video_features: neither 2D nor 3D features")
  length = parts[-1].shape[0]
  if strategy == "clip" or length <= n_tokens:
    if len(parts) == 2:
      parts = [_nearest(feat_2d, feat_3d.shape[0]), feat_3d]
    feats = np.concatenate([_l2(p) for p in parts], axis=1)[:n_tokens]
  elif strategy in ("nearest", "max_pool"):
    out = []
    for p in parts:
      k = p.shape[0] // n_tokens
      if strategy == "max_pool" and k > 1:
        m = p.shape[0] // k
        p = p[:m * k].reshape(m, k, -1).max(axis=1)
      out.append(_l2(_nearest(p, n_tokens)))
    feats = np.concatenate(out, axis=1)
  else:
    raise ValueError(f"video sampling strategy {strategy!r}: expected clip, nearest or max_pool")
  feats = feats.astype(np.float32)
  out = np.zeros((n_tokens, feats.shape[1]), np.float32)
  out[:feats.shape[0]] = feats
  mask = np.zeros((n_tokens,), np.float32)
  mask[:feats.shape[0]] = 1
  return out, mask


def _pipe_outputs(x: Mapping[str, np.ndarray], names: list[str], n_tokens: int
                  ) -> dict[str, np.ndarray]:
  out = {}
  for name in names:
    m = re.fullmatch(r"pipe_(.+)_(clip|nearest|max_pool)_video", name)
    if not m:
      continue
    case, strategy = m.groups()
    video, mask = video_features(x.get(f"pipe_{case}_feat_2d"), x.get(f"pipe_{case}_feat_3d"),
                                 n_tokens, strategy)
    out[name], out[name + "_mask"] = video, mask
  return out


# -- the whole fixture -----------------------------------------------------------------------------
def _batch(x: Mapping[str, np.ndarray], prefix: str = "") -> dict[str, jax.Array]:
  return {k: jnp.asarray(x[prefix + k]) for k in BATCH_KEYS if prefix + k in x}


def _loss_configs(cfg: dict) -> dict[str, dict[str, float]]:
  """{'pretrain': weights of config 'loss', '<tag>': of 'loss_<tag>'} for CombinatorialLoss."""
  out = {}
  for key, val in cfg.items():
    if key.startswith("loss") and isinstance(val, dict) and val.get("type") == "CombinatorialLoss":
      tag = "pretrain" if key == "loss" else key[len("loss_"):]
      args = val.get("args", {})
      if args.get("contrastive_loss", "NormSoftmax") != "NormSoftmax":
        raise ValueError(f"fixture config.json {key}: only NormSoftmax is implemented")
      out[tag] = {k[:-len("_weight")]: float(v) for k, v in args.items() if k.endswith("_weight")}
      out[tag]["__temperature"] = float(args.get("temperature", 0.05))
  return out


def _weights(w: dict) -> tuple:
  return tuple(sorted((k, v) for k, v in w.items() if not k.startswith("__")))


def compute_fixture_outputs(fixture_dir, *, compiler_options: dict | None = None
                            ) -> dict[str, np.ndarray]:
  """Every output named by the fixture's outputs.npz, recomputed with vlx."""
  d = pathlib.Path(fixture_dir)
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "inputs.npz") as z:
    x = {k: z[k] for k in z.files}
  with np.load(d / "outputs.npz") as z:
    ref_dtypes = {k: z[k].dtype for k in z.files}
  names = list(ref_dtypes)
  result, sd = convert_fixture(d, cfg)
  model = result.model
  opt = dict(options=compiler_options)
  out: dict[str, Any] = {}

  fwd = {k: np.asarray(v) for k, v in _run(_forward, model, _batch(x), static=(0, "none"),
                                           **opt).items()}
  out.update(fwd)
  for k in [k for k in fwd if k.endswith("_embed") and not k.startswith("fusion_")]:
    out[f"normalized_{k}"] = np.asarray(jnp.asarray(fwd[k]) / jnp.maximum(
        jnp.linalg.norm(fwd[k], axis=-1, keepdims=True), 1e-8))
  b = x["text"].shape[0]
  out.update(_sims_and_metrics(fwd, names, "", b + 2))

  losses = _loss_configs(cfg)
  nonempty = {m: jnp.asarray(fwd[f"{m}_nonempty_input_mask"]) for m in CODES.values()
              if f"{m}_nonempty_input_mask" in fwd}
  for tag, w in losses.items():
    # eval mode: the forward's embeddings are the training forward's (force_cross_modal only adds
    # the late-fusion ones, which no loss pair uses)
    res = combinatorial_loss({k: jnp.asarray(v) for k, v in fwd.items()}, nonempty,
                             dict(_weights(w)), temperature=w["__temperature"])
    out.update({f"loss_{tag}_{k}": np.asarray(v) for k, v in res.items()})
    name = f"loss_{tag}_total_trainmode_bn_batchstats"
    if name in ref_dtypes:
      static = (_weights(w), True, w["__temperature"])
      out[name] = np.asarray(_run(_losses, model, _batch(x), static=static, **opt)["total"])

  full = [n[len("grad_"):] for n in names if n.startswith("grad_")]
  norms = [n[len("gradnorm_"):] for n in names if n.startswith("gradnorm_")]
  if full or norms:
    grads = _run(_grad_step, model, _batch(x), static=(_weights(losses["pretrain"]),
                                                        losses["pretrain"]["__temperature"]), **opt)
    flat = {"/".join(str(q) for q in k): np.asarray(v[...]) for k, v in nnx.to_flat_state(grads)}
    src = reverse.source_gradients(result, sd, flat)
    for n in full + norms:
      if n not in src:
        raise ValueError(f"fixture outputs.npz asks for the gradient of {n!r}, which is not a "
                         "trainable checkpoint key")
    out.update({f"grad_{n}": src[n] for n in full})
    out.update({f"gradnorm_{n}": reverse.norm(src[n]) for n in norms})

  long_audio = cfg.get("long_audio", {})
  for strategy in long_audio.get("strategy_audio_pooling", []):
    res = _run(_forward, model, _batch(x), static=(int(long_audio["audio_max_tokens"]), strategy),
               **opt)
    for k in ("audio_tokens", "audio_attention_mask", "audio_embed", "va_embed", "ta_embed"):
      out[f"longaudio_{strategy}_{k}"] = np.asarray(res[k])

  n_tok = int(cfg.get("video_pipeline", {}).get("n_tokens", x["video"].shape[1]))
  out.update(_pipe_outputs(x, names, n_tok))

  if "clips_video" in x:
    clips = {k: np.asarray(v) for k, v in _run(_forward, model, _batch(x, "clips_"),
                                               static=(0, "none"), **opt).items()}
    ids = np.asarray(x["clips_ids"]).astype(str)
    keep = sorted(set(ids) - {"-1"})
    averaged = {}
    for k, v in clips.items():
      if not k.endswith("_embed") or k.startswith("fusion_"):
        continue
      out[f"clips_perclip_{k}"] = v
      averaged[k] = np.stack([v[ids == i].mean(axis=0) for i in keep])
      out[f"clips_averaged_{k}"] = averaged[k]
    out.update(_sims_and_metrics(averaged, names, "clips_", len(keep)))

  if "metric_test_sims" in x:
    for name in names:
      m = re.fullmatch(r"metric_test_ties(?:_completesize(\d+))?", name)
      if m:
        out[name] = retrieval_metrics(x["metric_test_sims"], int(m.group(1)) if m.group(1)
                                      else None)

  missing = sorted(set(names) - set(out))
  if missing:
    raise ValueError(f"fixture outputs.npz names outputs this runner does not produce: "
                     f"{missing[:10]}")
  return {k: np.asarray(out[k]).astype(ref_dtypes[k]) for k in names}
