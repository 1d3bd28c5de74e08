"""Everything-at-Once converter rules (vlx/convert/engine.py API): released `latest_model.pth`
state dicts -> the EverythingAtOnce tree (spec §3, §7).

Variants (spec §3): tva, tva_finetuned_msrvtt, tva_finetuned_youcook, s3d, clip, tv_only. All have
the same 188 keys; the shapes tell tva / s3d (video 1024-d) / clip (video and text 512-d) apart.
The TV-only and fine-tuned files have exactly tva's shapes: only the container's `arch` / `config`
entries (read as data, `variant_from_container`) name them. Keys may carry DataParallel's `module.`
prefix (every rule accepts it; torch_io also strips it when all keys have it).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from vlx.convert import hooks as hk
from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.rules import Rule, linear, norm
from vlx.layers import davenet_rules, vit_rules
from vlx.models.eao.model import MODALITIES, build, model_config  # noqa: F401 (engine uses build)

VARIANTS = ("tva", "tva_finetuned_msrvtt", "tva_finetuned_youcook", "s3d", "clip", "tv_only")
P = r"(?:module\.)?"          # optional DataParallel prefix
_MARKERS = ("fusion.masking_token", "davenet.conv1.weight", "text_token_proj.fc.weight",
            "video_token_proj.fc.weight")


def _strip(key: str) -> str:
  return key[len("module."):] if key.startswith("module.") else key


def detect_variant(keys) -> str:
  """'tva' for any EAO state dict (the other variants need shapes or the container's config)."""
  names = {_strip(str(k)) for k in keys}
  missing = [k for k in _MARKERS if k not in names]
  if missing:
    raise WrongFamilyError(f"not an Everything-at-Once checkpoint: keys {missing} are missing "
                           f"(got e.g. {sorted(names)[:5]})")
  return "tva"


def _get(source: Mapping[str, Any], key: str) -> Any:
  for k in (key, "module." + key):
    if k in source:
      return source[k]
  raise ConversionError(f"Everything-at-Once checkpoint has no key {key!r}")


def _shape(source: Mapping[str, Any], key: str) -> tuple[int, ...]:
  return tuple(int(d) for d in _get(source, key).shape)


def detect_variant_from_shapes(source: Mapping[str, Any]) -> str:
  """tva / s3d / clip from the token projections' input widths (released sizes only; any other
  width, e.g. a reduced fixture, is 'tva', whose rules fit every width)."""
  detect_variant(source)
  dv = _shape(source, "video_token_proj.fc.weight")[1]
  dt = _shape(source, "text_token_proj.fc.weight")[1]
  if dv == 512 and dt == 512:
    return "clip"
  if dv == 1024 and dt == 300:
    return "s3d"
  return "tva"


def _strings(x: Any) -> list[str]:
  """Every string inside a nested config (dicts, lists), read as data."""
  if isinstance(x, str):
    return [x]
  if isinstance(x, Mapping):
    return [s for v in x.values() for s in _strings(v)]
  if isinstance(x, (list, tuple)):
    return [s for v in x for s in _strings(v)]
  return []


def variant_from_container(container: Mapping[str, Any], source: Mapping[str, Any]) -> str:
  """The variant from a trainer container {arch, config, state_dict, ...} (plain data: `arch` is
  a class name, `config` the parsed yaml): TV-only from the arch type, fine-tuned from the config
  name / dataset, else from the shapes."""
  cfg = container.get("config") if isinstance(container.get("config"), Mapping) else {}
  arch_cfg = cfg.get("arch") if isinstance(cfg.get("arch"), Mapping) else {}
  arch_type = str(arch_cfg.get("type", "")) or str(container.get("arch", ""))
  if arch_type.endswith("TV_Only"):
    return "tv_only"
  by_shapes = detect_variant_from_shapes(source)
  name = str(cfg.get("name", "")).lower()
  if by_shapes == "tva" and "finetun" in name:
    datasets = " ".join(_strings(cfg.get("data_loader", {}))).lower() + " " + name
    if "msrvtt" in datasets:
      return "tva_finetuned_msrvtt"
    if "youcook" in datasets:
      return "tva_finetuned_youcook"
  return by_shapes


def overrides_from_container(container: Mapping[str, Any]) -> dict[str, Any]:
  """Model-config fields the shapes cannot tell (head count, pooling), from config.arch.args."""
  cfg = container.get("config") if isinstance(container.get("config"), Mapping) else {}
  args = (cfg.get("arch") or {}).get("args") or {}
  fp = args.get("fusion_params") or {}
  out: dict[str, Any] = {}
  if "num_heads" in fp:
    out["num_heads"] = int(fp["num_heads"])
  if "mlp_ratio" in fp:
    out["mlp_ratio"] = float(fp["mlp_ratio"])
  if "strategy_audio_pooling" in args:
    out["audio_pooling"] = str(args["strategy_audio_pooling"])
  if "audio_max_num_STFT_frames" in args and args["audio_max_num_STFT_frames"]:
    out["audio_max_tokens"] = int(args["audio_max_num_STFT_frames"]) // 64
  for field in ("use_positional_emb",):
    if args.get(field):
      raise ConversionError(f"config.arch.args.{field}=True: not a released EAO design "
                            "(no positional embeddings are implemented)")
  if fp.get("use_cls_token"):
    raise ConversionError("config.arch.args.fusion_params.use_cls_token=True: not a released "
                          "EAO design (no CLS token is implemented)")
  return out


def gated(src: str, dst: str) -> list[Rule]:
  """GatedEmbeddingUnit `src`.fc / `src`.cg.fc -> `dst`/fc, `dst`/cg_fc."""
  return [*linear(src + r"\.fc", dst + "/fc"), *linear(src + r"\.cg\.fc", dst + "/cg_fc")]


def rules(variant: str, model_config: ml_collections.ConfigDict) -> list[Rule]:
  if variant not in VARIANTS:
    raise ConversionError(f"unknown Everything-at-Once variant {variant!r}; expected one of "
                          f"{VARIANTS}")
  out = [Rule(P + r"fusion\.masking_token", "fusion/masking_token"),
         *vit_rules.block(P + r"fusion\.blocks\.(\d+)\.", r"fusion/blocks/\1/"),
         *davenet_rules.davenet(P + r"davenet\.", "davenet/")]
  for m in MODALITIES:
    out += [*gated(P + rf"{m}_token_proj", f"{m}_token_proj"),
            *norm(P + rf"{m}_norm_layer", f"{m}_norm_layer")]
    if model_config.individual_projections:
      out += gated(P + rf"{m}_proj", f"{m}_proj")
  if not model_config.individual_projections:
    out += gated(P + "proj", "proj")
  return out


def unused(variant: str) -> dict[str, str]:
  out = {P + r"fusion\.norm\.(?:weight|bias)":
             "fusion.norm is never applied in the reference forward"}
  out.update(davenet_rules.unused(P + r"davenet\."))
  return out


def infer_model_config(source: Mapping[str, Any], variant: str) -> ml_collections.ConfigDict:
  """model_config('') with every size the shapes determine; the head count (released 64) and the
  audio pooling are not in the shapes (override them, e.g. from overrides_from_container)."""
  if variant not in VARIANTS:
    raise ConversionError(f"unknown Everything-at-Once variant {variant!r}; expected one of "
                          f"{VARIANTS}")
  c = model_config("")
  detect_variant(source)
  hidden, c.text_dim = _shape(source, "text_token_proj.fc.weight")
  c.video_dim = _shape(source, "video_token_proj.fc.weight")[1]
  c.hidden = hidden
  names = {_strip(k) for k in source}
  c.depth = len({k.split(".")[2] for k in names if k.startswith("fusion.blocks.")})
  c.mlp_ratio = _shape(source, "fusion.blocks.0.mlp.fc1.weight")[0] / hidden
  c.individual_projections = "text_proj.fc.weight" in names
  c.proj_dim = _shape(source, ("text_proj" if c.individual_projections else "proj")
                      + ".fc.weight")[0]
  stripped = {_strip(k): v for k, v in source.items() if _strip(k).startswith("davenet.")}
  try:
    dv = davenet_rules.infer_config(stripped, "davenet.")
  except ValueError as e:
    raise ConversionError(f"Everything-at-Once checkpoint: {e}") from None
  c.davenet.update(dv)
  c.tv_only = variant == "tv_only"
  return c


def read_checkpoint(path) -> tuple[dict[str, Any], str, dict[str, Any]]:
  """(flat state dict without `module.`, variant, model-config overrides) of a released
  `latest_model.pth`: the container is read with torch.load(weights_only=True) only (optimizer
  state, epoch, monitor_best and config are plain data; a file needing code to unpickle raises
  UnsafeCheckpointError), its `arch` / `config` entries are read as data for the variant and the
  sizes the shapes do not give (head count, audio pooling)."""
  from vlx.convert import torch_io  # pylint: disable=import-outside-toplevel
  raw = torch_io.load_raw(path)
  container = raw if isinstance(raw, Mapping) else {}
  source = torch_io.load_state_dict(path)   # same file again, memory-mapped: the weights
  return source, variant_from_container(container, source), overrides_from_container(container)
