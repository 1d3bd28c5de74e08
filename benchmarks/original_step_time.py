"""Train-step time of the authors' own PyTorch model at the architecture of a vlx config.

Issue 17 compares vlx with the original code side by side (same architecture and batch, fp32,
dropout on, PEM on both sides, remat off, compile excluded). This script builds the ORIGINAL
model (ALPRO `AlproForPretrain` with its frozen `Prompter`, or All-in-one `AllinoneTransformerSS`
with the itm + mlm pre-training objectives) by importing it from an extracted copy of the
authors' repository (--repo; nothing of it is copied here), sizes it from the vlx config
(`benchmarks/step_time.py`'s `load_config` + `apply_overrides`), initialises it randomly (no
downloads), and times full training steps: forward + backward + the original's optimizer, on a
synthetic batch of the shapes vlx's step uses (benchmarks/step_time.py's synthetic_batch recipe:
normal-noise frames, text ids with the last quarter padding, 15 % MLM labels; ALPRO: the crop
= the clip and a 70 % patch mask for PEM; All-in-one: one random negative clip per row), with
torch.set_num_threads(os.cpu_count()). Prints ONE JSON line: family, config, overrides,
batch_size, params (original), params_unused (built but never used by the step, see UNUSED),
step_s (median, warm-up excluded), step_s_spread (p90 - p10), loss, peak_rss_mb (getrusage max
RSS of this process), torch_threads, vlx_params (vlx's count, from its abstract state in a
subprocess after the timing, so jax never enters this process) and params_match (params -
params_unused == vlx_params). Verified: params_match at configs/alpro_pretrain.py (465,663,874
- 615,200 = 465,048,674), :demo with PEM on (2,489,398 - 103,200 = 2,386,198),
configs/allinone_pretrain.py (133,932,860) and :demo (891,010).
Time only on an idle machine: torch's OpenMP threads slow down by orders of magnitude when
another process holds the cores.

Setup (once, outside /work/main; nothing goes into the main environment):

  mkdir -p /work/orig/alpro /work/orig/allinone
  git -C /work/.mirror/salesforce+ALPRO/repo archive HEAD | tar -x -C /work/orig/alpro
  git -C /work/.mirror/showlab+all-in-one/repo archive HEAD | tar -x -C /work/orig/allinone
  python -m venv --system-site-packages /work/origenv     # sees torch 2.13.0+cpu, jax, numpy
  /work/origenv/bin/pip install --no-deps timm==1.0.31 torchvision==0.28.0
  /work/origenv/bin/pip install pytorch-lightning==2.6.6 sacred==0.8.7 "setuptools<81"
  # (pulls lightning-utilities 0.15.3, torchmetrics 1.9.0; setuptools < 81 keeps the
  #  pkg_resources that sacred imports; transformers 5.23 / einops 0.8.2 / numpy come from the
  #  system site packages). ALPRO needs only einops + transformers; All-in-one all of these.

Runs (the lead times these with benchmarks/side_by_side.py; single runs):

  /work/origenv/bin/python benchmarks/original_step_time.py --family alpro \
      --repo /work/orig/alpro --config configs/alpro_pretrain.py --batch_size 2
  /work/origenv/bin/python benchmarks/original_step_time.py --family allinone \
      --repo /work/orig/allinone --config configs/allinone_pretrain.py --batch_size 2
  /work/origenv/bin/python benchmarks/original_step_time.py --family alpro \
      --repo /work/orig/alpro --config configs/alpro_pretrain.py:demo \
      --set model.pem=True --set objectives.pem=1.0 --batch_size 32
  /work/origenv/bin/python benchmarks/original_step_time.py --family allinone \
      --repo /work/orig/allinone --config configs/allinone_pretrain.py:demo --batch_size 32
  (--build_only: build + count parameters, no step; used for the base-size checks.)

Stubs / aliases (only modules that are unavailable here or do no model compute):
- `apex.normalization.fused_layer_norm.FusedLayerNorm` -> torch.nn.LayerNorm (the same op,
  fused on GPU by apex; imported by ALPRO but its layers use nn.LayerNorm anyway).
- `horovod.torch`: one process (rank 0, size 1, allgather = identity): what horovod does with
  one worker.
- ALPRO `src.utils.logger` (tensorboardX) and `src.utils.basic_utils` (ujson/pandas file
  helpers): logging and file I/O only.
- transformers 5 moved `apply_chunking_to_forward` / `prune_linear_layer` to
  `transformers.pytorch_utils` and dropped `find_pruneable_heads_and_indices`: aliased /
  re-implemented in `transformers.modeling_utils` (head pruning is never called).
- transformers' docstring decorators (`add_code_sample_docstrings`, ...) changed signature:
  replaced by pass-through decorators (they only edit docstrings).
- `PreTrainedModel.init_weights` (transformers 5 needs `post_init` state the original classes
  never create) -> transformers 4's behaviour: `_init_weights` on every module + the MLM
  decoder tied to the word embeddings.
- `get_head_mask` (removed in transformers 5) -> one `None` per layer, what it returned for no
  head mask (the only case in pre-training).
- `numpy.Inf` (removed in numpy 2) -> `numpy.inf`.
- `BertForMaskedLM.from_pretrained('bert-base-uncased', config)` -> `BertForMaskedLM(config)`:
  random init instead of a hub download (same modules, same compute).
- All-in-one `transformers.optimization.AdamW` (removed in transformers 5) ->
  `torch.optim.AdamW` (the same decoupled-weight-decay Adam update).
- All-in-one `pytorch_lightning.metrics` -> `torchmetrics` (the running loss / accuracy
  meters, moved there in PL 1.5); `AllInOne.modules.retrieval_metrics` (sklearn/ipdb, eval-only)
  -> empty stub; `torchvision._meta_registrations` -> empty module (the CPU torchvision wheel's
  C ops do not load against this torch build; only timm's import of torchvision.transforms is
  needed, no torchvision op runs). `self.log` without a Trainer is a no-op in PL 2.
- Sizes the originals hard-code are set from the vlx config: ALPRO's TimeSformer width 768 /
  depth 12 / heads 12 and its 768 -> 256 projections (+ the prompt feature tables) and
  All-in-one's ViT constructor (a registered variant that never downloads `pretrained` weights).
  At the base configs these are exactly the original values. TimeSformer's lookup of its
  pretrained-weights metadata by patch size (only 16 / 32 listed) reuses patch 16's entry for
  other patch sizes (metadata only).
- ALPRO's prompt feature tables (built once before training from the entity prompts by the
  prompter's text encoder, not part of a step) are random unit vectors of the same shape.

Optimizers (as the training scripts configure them):
- ALPRO (src/pretrain/run_pretrain_sparse.py): its own AdamW(model.parameters(), lr, betas)
  (weight decay not passed: 0), loss = itc + itm + mlm + mpm, backward, `zero_none_grad` (the
  prompter's parameters get zero gradients, so AdamW keeps moments for and updates them too, as
  in the original), `clip_grad_norm_` over all parameters (threshold = vlx's optim.grad_clip;
  the original always clips, at 20), `zero_grad(set_to_none=False)` (torch 1.x's default, the
  era of the code).
- All-in-one: the module's own `configure_optimizers` (`set_schedule`: AdamW over its
  decay / no-decay / head parameter groups, eps 1e-8, betas (0.9, 0.98), weight decay from the
  vlx config, polynomial schedule stepped per step; transformers' AdamW was removed in
  transformers 5 and is aliased to torch.optim.AdamW, the same update), `training_step` (loss =
  sum of the `*loss*` outputs: mlm + itm + 0.1 x wpa), backward, step; no gradient clipping
  (the Trainer of run.py sets none).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import time
import types

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = ("alpro", "allinone")
# Parameters the original builds but its pre-training step never uses (vlx does not create
# them): ALPRO's TimeSformer classification head (`num_classes=400`, in the model and in the
# prompter). `params - params_unused` is what must equal vlx's count.
UNUSED = re.compile(r"visual_encoder\.model\.head\.")


# ----------------------------------------------------------------------------- vlx side

def vlx_config(spec: str, overrides: list[str]):
  """The vlx config with `--set` overrides (step_time's own loaders)."""
  sys.path.insert(0, str(REPO))
  from benchmarks import step_time  # pylint: disable=import-outside-toplevel (imports jax)
  config = step_time.load_config(spec)
  config.name = spec
  step_time.apply_overrides(config, overrides)
  return config


def vlx_param_count(spec: str, overrides: list[str]) -> int:
  """vlx's parameter count for the config (abstract state: nothing allocated)."""
  sys.path.insert(0, str(REPO))
  from vlx import optim, registry, steps  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  config = vlx_config(spec, overrides)
  tx, _ = optim.make_optimizer(config)
  _, abstract = steps.abstract_state(registry.get(config.model.family), config, tx)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))


def config_fields(spec: str, overrides: list[str]) -> dict:
  """The fields of the vlx config the original needs, as plain JSON (read in a subprocess so
  that jax never enters the timed process and its RSS)."""
  config = vlx_config(spec, overrides)
  t = config.data.train
  out = dict(model=config.model.to_dict(), objectives=dict(config.objectives),
             optim=dict(lr=float(config.optim.lr), b1=float(config.optim.b1),
                        b2=float(config.optim.b2), grad_clip=float(config.optim.grad_clip),
                        weight_decay=float(config.optim.weight_decay)),
             num_frames=int(t.num_frames), size=int(t.get("crop", 0) or t.resolution),
             max_text_len=int(t.max_text_len),
             false_videos=int(t.get("false_videos", 0) or 0))
  return json.loads(json.dumps(out, default=str))


def _helper(mode: str, spec: str, overrides: list[str]) -> dict | int:
  cmd = [sys.executable, __file__, "--_helper", mode, "--config", spec, "--family", "alpro",
         "--repo", "."] + [x for o in overrides for x in ("--set", o)]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if res.returncode:
    raise SystemExit(f"vlx config {spec}: {res.stderr.strip().splitlines()[-1:]}")
  return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- stubs

def _module(name: str, **attrs) -> types.ModuleType:
  mod = types.ModuleType(name)
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


def _transformers_aliases() -> None:
  """Symbols older transformers had in transformers.modeling_utils (see the docstring)."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import modeling_utils, pytorch_utils  # pylint: disable=import-outside-toplevel
  for name in ("apply_chunking_to_forward", "prune_linear_layer"):
    if not hasattr(modeling_utils, name):
      setattr(modeling_utils, name, getattr(pytorch_utils, name))

  def pruneable_heads(heads, n_heads, head_size, already_pruned):
    keep = torch.ones(n_heads, head_size)
    heads = set(heads) - set(already_pruned)
    for h in heads:
      keep[h - sum(1 for p in already_pruned if p < h)] = 0
    keep = keep.view(-1).eq(1)
    return heads, torch.arange(len(keep))[keep].long()
  if not hasattr(modeling_utils, "find_pruneable_heads_and_indices"):
    modeling_utils.find_pruneable_heads_and_indices = pruneable_heads

  from transformers import file_utils  # pylint: disable=import-outside-toplevel

  def docstring_only(*args, **kwargs):   # the docstring decorators' signatures changed
    del args, kwargs
    return lambda fn: fn
  for name in ("add_code_sample_docstrings", "add_start_docstrings",
               "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
    setattr(file_utils, name, docstring_only)


def _torchvision_stub() -> None:
  """The CPU torchvision wheel's C ops do not load against this torch build; its pure-Python
  parts (transforms, imported by timm and transformers) do, once the fake-op registrations of
  those C ops are skipped. No torchvision op runs in either model."""
  _module("torchvision._meta_registrations")


def _alpro_stubs() -> None:
  import logging  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  _module("apex")
  _module("apex.normalization")
  _module("apex.normalization.fused_layer_norm", FusedLayerNorm=torch.nn.LayerNorm)
  hvd = _module("horovod.torch", rank=lambda: 0, local_rank=lambda: 0, size=lambda: 1,
                allgather=lambda x, name=None: x)
  _module("horovod", torch=hvd)

  class _Quiet:
    def __getattr__(self, name):
      return lambda *a, **k: None
  _module("src.utils.logger", LOGGER=logging.getLogger("alpro"), TB_LOGGER=_Quiet(),
          RunningMeter=object, add_log_to_file=lambda *a, **k: None)

  def load_json(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  _module("src.utils.basic_utils", load_json=load_json, load_jsonl=None, save_frames_grid=None)
  _transformers_aliases()
  if not hasattr(np, "Inf"):   # removed in numpy 2; compute_vtm masks the diagonal with it
    np.Inf = np.inf


def _allinone_stubs() -> None:
  import torchmetrics  # pylint: disable=import-outside-toplevel
  import pytorch_lightning  # pylint: disable=import-outside-toplevel
  pytorch_lightning.metrics = _module("pytorch_lightning.metrics", Metric=torchmetrics.Metric)
  _module("AllInOne.modules.retrieval_metrics", t2v_metrics=None, v2t_metrics=None)
  _module("ipdb")


# ----------------------------------------------------------------------------- batches

def _text(rs: np.random.RandomState, batch: int, length: int, vocab: int):
  """Text ids / mask / MLM ids+labels with the recipe of step_time.synthetic_batch."""
  ids = rs.randint(5, min(vocab, 1000), size=(batch, length)).astype(np.int64)
  ids[:, 0], ids[:, length * 3 // 4:] = 2, 0
  labels = np.where(rs.rand(batch, length) < 0.15, ids, -100).astype(np.int64)
  return ids, (ids > 0).astype(np.int64), np.where(labels >= 0, 4, ids), labels


# ----------------------------------------------------------------------------- ALPRO

def _no_head_mask(self, head_mask, num_layers):
  """transformers 4's `get_head_mask` for the only case used here: no head mask -> one None per
  layer (removed in transformers 5)."""
  del self
  if head_mask is not None:
    raise NotImplementedError("head masks are not used in pre-training")
  return [None] * num_layers


def _init_weights_v4(xbert):
  """`PreTrainedModel.init_weights` as transformers 4 (the code's era) did it: the module's own
  `_init_weights` over all submodules, then the MLM decoder tied to the word embeddings
  (config.tie_word_embeddings). transformers 5's version needs state that only its
  `post_init` creates, which the original classes never call."""
  def init_weights(self):
    self.apply(self._init_weights)  # pylint: disable=protected-access
    defines_output = any("get_output_embeddings" in c.__dict__ for c in type(self).__mro__
                         if c.__module__ == xbert.__name__)
    if defines_output and getattr(self.config, "tie_word_embeddings", True):
      out = self.get_output_embeddings()
      if out is not None:
        out.weight = getattr(self, self.base_model_prefix).get_input_embeddings().weight
  return init_weights


def build_alpro(repo: str, f: dict, batch_size: int):
  """(model, batch, step function) of ALPRO pre-training at the vlx config's sizes."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, repo)
  _alpro_stubs()
  from transformers.models.bert.configuration_bert import BertConfig  # pylint: disable=import-outside-toplevel
  from src.modeling import alpro_models, xbert  # pylint: disable=import-outside-toplevel
  from src.modeling.timesformer import vit  # pylint: disable=import-outside-toplevel
  from src.optimization.adamw import AdamW  # pylint: disable=import-outside-toplevel
  from src.utils.misc import zero_none_grad  # pylint: disable=import-outside-toplevel

  m, v, t = f["model"], f["model"]["video"], f["model"]["text"]
  if not m.get("pem") or not f["objectives"].get("pem"):
    raise SystemExit("ALPRO: the comparison runs with PEM on both sides: "
                     "--set model.pem=True --set objectives.pem=1.0")
  bert = json.load(open(os.path.join(repo, "config_release/base_model.json"), encoding="utf-8"))
  bert.update(hidden_size=t["hidden_size"], num_hidden_layers=t["num_layers"],
              fusion_layer=t["fusion_layer"], num_attention_heads=t["num_heads"],
              intermediate_size=t["intermediate_size"],
              max_position_embeddings=t["max_position_embeddings"], vocab_size=t["vocab_size"],
              type_vocab_size=t["type_vocab_size"], layer_norm_eps=t["ln_eps"],
              hidden_dropout_prob=t["dropout"], attention_probs_dropout_prob=t["attn_dropout"],
              encoder_width=v["width"])
  bert_cfg = BertConfig(**bert)
  bert_cfg.num_entities = m["num_entities"]
  bert_cfg.max_n_example_per_group = 1
  video_cfg = json.load(open(os.path.join(
      repo, "config_release/timesformer_divst_8x32_224_k600.json"), encoding="utf-8"))
  video_cfg.update(num_frm=f["num_frames"], img_size=v["img_size"], patch_size=v["patch_size"],
                   drop_path_rate=v["drop_path_rate"], gradient_checkpointing=False)

  # TimeSformer hard-codes ViT-B; size it from the vlx config (identical at the base size).
  original_vit = vit.VisionTransformer

  def sized_vit(**kw):
    kw.update(embed_dim=v["width"], depth=v["depth"], num_heads=v["num_heads"],
              mlp_ratio=v["mlp_ratio"])
    return original_vit(**kw)
  vit.VisionTransformer = sized_vit
  # TimeSformer looks up its pretrained-weights metadata (URL, mean/std) by patch size: only
  # patch 16 / 32 are listed; any other size reuses patch 16's (never used for compute).
  vit.default_cfgs.setdefault(f"vit_base_patch{v['patch_size']}_224",
                              vit.default_cfgs["vit_base_patch16_224"])
  xbert.BertPreTrainedModel.init_weights = _init_weights_v4(xbert)
  if not hasattr(xbert.BertPreTrainedModel, "get_head_mask"):
    xbert.BertPreTrainedModel.get_head_mask = _no_head_mask
  # random init, no hub download
  xbert.BertForMaskedLM.from_pretrained = classmethod(lambda cls, name, config=None: cls(config))
  model = alpro_models.AlproForPretrain(bert_cfg, video_enc_cfg=video_cfg, input_format="RGB")
  vit.VisionTransformer = original_vit

  d, e = t["hidden_size"], m["embed_dim"]
  for sub in (model, model.prompter):   # the 768 -> 256 projections are hard-coded too
    if (sub.vision_proj.in_features, sub.vision_proj.out_features) != (v["width"], e):
      sub.vision_proj = nn.Linear(v["width"], e)
    if (sub.text_proj.in_features, sub.text_proj.out_features) != (d, e):
      sub.text_proj = nn.Linear(d, e)
  pr = model.prompter
  if pr.video_prompt_feat.shape[1] != e:
    pr.video_prompt_feat = torch.rand(m["num_entities"], e)
    pr.image_prompt_feat = torch.rand(m["num_entities"], e)
  # prompt features: unit vectors (what build_text_prompts stores), fixed for the run
  pr.video_prompt_feat = torch.nn.functional.normalize(pr.video_prompt_feat, dim=-1)
  pr.image_prompt_feat = torch.nn.functional.normalize(pr.image_prompt_feat, dim=-1)
  pr.prompt_initialized = True
  model.train()

  rs = np.random.RandomState(0)
  size, frames, length = f["size"], f["num_frames"], f["max_text_len"]
  ids, mask, mlm_ids, labels = _text(rs, batch_size, length, t["vocab_size"])
  video = torch.from_numpy(rs.randn(batch_size, frames, 3, size, size).astype(np.float32))
  grid = size // v["patch_size"]
  batch = dict(visual_inputs=video, crop_visual_inputs=video.clone(),
               context_visual_inputs=video.clone(),
               mpm_mask=torch.from_numpy((rs.rand(batch_size, grid, grid) > 0.3)
                                         .astype(np.float32)),
               text_input_ids=torch.from_numpy(ids), text_input_mask=torch.from_numpy(mask),
               mlm_text_input_ids=torch.from_numpy(mlm_ids),
               mlm_labels=torch.from_numpy(labels), type="video")
  o = f["optim"]
  opt = AdamW(model.parameters(), lr=o["lr"], betas=(o["b1"], o["b2"]))
  clip = o["grad_clip"] if o["grad_clip"] > 0 else 20.0

  def step():
    out = model(batch)
    loss = out["itc_loss"] + out["itm_loss"] + out["mlm_loss"] + out["mpm_loss"]
    loss.backward()
    zero_none_grad(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=False)
    return float(loss.detach())
  return model, step


# ----------------------------------------------------------------------------- All-in-one

def build_allinone(repo: str, f: dict, batch_size: int):
  """(model, step function) of All-in-one pre-training (itm incl. wpa + mlm) at the vlx sizes."""
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, repo)
  _allinone_stubs()
  import transformers.optimization as hf_optim  # pylint: disable=import-outside-toplevel
  if not hasattr(hf_optim, "AdamW"):
    hf_optim.AdamW = torch.optim.AdamW
  from AllInOne import config as aio_config  # pylint: disable=import-outside-toplevel
  from AllInOne.modules import allinone_module  # pylint: disable=import-outside-toplevel
  from AllInOne.modules import allinone_utils  # pylint: disable=import-outside-toplevel
  from AllInOne.modules import base_vision_transformer as vit  # pylint: disable=import-outside-toplevel

  m = f["model"]
  if m.get("distilled") or m.get("deit"):
    raise SystemExit("All-in-one: only the ViT (non-DeiT) variants are wired here")
  cfg = dict(aio_config.ex.configurations[0]())
  cfg.update(aio_config.ex.named_configs["task_mlm_itm_webvid_howto"]())
  objectives = f["objectives"]
  loss_names = dict(cfg["loss_names"])
  loss_names.update(mlm=int(objectives.get("mlm", 0) > 0), itm=int(objectives.get("itm", 0) > 0))
  cfg.update(loss_names=loss_names, vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
             num_layers=m["num_layers"], num_heads=m["num_heads"],
             mlp_ratio=int(m["mlp_ratio"]), max_text_len=m["max_text_len"],  # position table
             drop_rate=m["drop_rate"], num_frames=f["num_frames"], image_size=m["img_size"],
             patch_size=m["patch_size"], shared_embedding_dim=m["shared_embedding_dim"],
             learning_rate=f["optim"]["lr"], weight_decay=f["optim"]["weight_decay"],
             load_path="", vit="vlx_sized_vit")

  def sized_vit(pretrained=False, **kw):   # never downloads: random init
    del pretrained
    return vit._create_vision_transformer(  # pylint: disable=protected-access
        "vit_base_patch16_224", pretrained=False, img_size=m["img_size"],
        patch_size=m["patch_size"], embed_dim=m["hidden_size"], depth=m["num_layers"],
        num_heads=m["num_heads"], mlp_ratio=m["mlp_ratio"], drop_path_rate=m["drop_path_rate"],
        **kw)
  vit.vlx_sized_vit = sized_vit
  model = allinone_module.AllinoneTransformerSS(cfg)
  model.train()

  rs = np.random.RandomState(0)
  size, frames, length = f["size"], f["num_frames"], f["max_text_len"]
  ids, mask, mlm_ids, labels = _text(rs, batch_size, length, m["vocab_size"])
  video = torch.from_numpy(rs.randn(batch_size, frames, 3, size, size).astype(np.float32))
  false = torch.from_numpy(rs.randn(batch_size, frames, 3, size, size).astype(np.float32))
  batch = dict(image=[video], false_image_0=[false], text=["x"] * batch_size,
               text_ids=torch.from_numpy(ids), text_masks=torch.from_numpy(mask),
               text_labels=torch.full_like(torch.from_numpy(ids), -100),
               text_ids_mlm=torch.from_numpy(mlm_ids),
               text_labels_mlm=torch.from_numpy(labels))
  # The module's own configure_optimizers (set_schedule: AdamW over its decay / no-decay
  # parameter groups + the polynomial warm-up/decay schedule stepped every step). It reads only
  # trainer.max_steps: a stand-in trainer is attached for that call and detached again (with no
  # trainer, `self.log` stays a no-op).
  model._trainer = types.SimpleNamespace(max_steps=int(cfg["max_steps"]))  # pylint: disable=protected-access
  (opt,), (sched,) = model.configure_optimizers()
  model._trainer = None  # pylint: disable=protected-access
  scheduler = sched["scheduler"]

  def step():
    loss = model.training_step(batch, 0)
    loss.backward()
    opt.step()
    scheduler.step()
    opt.zero_grad()
    return float(loss.detach())
  return model, step


# ----------------------------------------------------------------------------- main

def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--family", choices=FAMILIES, required=True)
  p.add_argument("--repo", required=True, help="extracted original repository (see docstring)")
  p.add_argument("--config", required=True, help="vlx configs/<file>.py[:preset]")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
  p.add_argument("--batch_size", type=int, default=2)
  p.add_argument("--num_steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--build_only", action="store_true", help="build + count parameters only")
  p.add_argument("--no_vlx_params", action="store_true", help="skip vlx's parameter count")
  p.add_argument("--_helper", default="", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a._helper == "fields":  # pylint: disable=protected-access
    print(json.dumps(config_fields(a.config, a.set)))
    return
  if a._helper == "params":  # pylint: disable=protected-access
    print(json.dumps(vlx_param_count(a.config, a.set)))
    return

  fields = _helper("fields", a.config, a.set)
  if fields["model"]["family"] != a.family:
    raise SystemExit(f"--config {a.config} is model.family={fields['model']['family']!r}, "
                     f"not --family {a.family}")
  _torchvision_stub()
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  build = build_alpro if a.family == "alpro" else build_allinone
  model, step = build(os.path.abspath(a.repo), fields, a.batch_size)
  out = dict(family=a.family, config=a.config, overrides=a.set, batch_size=a.batch_size,
             params=sum(p.numel() for p in model.parameters()))
  unused = [n for n, _ in model.named_parameters() if UNUSED.search(n)]
  out["params_unused"] = sum(p.numel() for n, p in model.named_parameters() if n in unused)
  if not a.build_only:
    for _ in range(a.warmup):
      loss = step()
    times = []
    for _ in range(a.num_steps):
      t0 = time.perf_counter()
      loss = step()
      times.append(time.perf_counter() - t0)
    p10, p90 = np.percentile(times, [10, 90])
    out.update(step_s=round(float(np.median(times)), 4), step_s_spread=round(float(p90 - p10), 4),
               loss=loss)
  out.update(peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
             torch_threads=torch.get_num_threads())
  if not a.no_vlx_params:   # after the timing, in a subprocess: jax never shares this process
    out["vlx_params"] = _helper("params", a.config, a.set)
    out["params_match"] = out["params"] - out["params_unused"] == out["vlx_params"]
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
