"""Shared config pieces: preset parsing and the blocks every experiment has."""
from __future__ import annotations

import functools

import ml_collections

PRESETS = ("", "demo", "tiny")  # plus the MODIFIERS below, e.g. "demo,own"


def parse_preset(arg: str | None) -> str:
  """`get_config('demo')` -> 'demo'; '' is the paper's setting. Rejects unknown presets."""
  arg = (arg or "").strip()
  if arg not in PRESETS:
    raise ValueError(f"unknown config preset {arg!r}; expected one of {PRESETS}, optionally "
                     f"with the modifiers {tuple(MODIFIERS)} (e.g. --config "
                     "configs/alpro_pretrain.py:demo or configs/alpro_msrvtt_ret.py:demo,own)")
  return arg


def base_config() -> ml_collections.ConfigDict:
  """The fields every experiment has; family configs fill and extend them."""
  c = ml_collections.ConfigDict()
  c.seed = 42
  c.model = ml_collections.ConfigDict(dict(
      family="", dtype="float32", param_dtype="float32", remat=False))
  c.objectives = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(
      global_batch_size=32, data_dir="", shuffle_buffer=1024, tokenizer="", mlm_probability=0.15,
      # MLM corruption: 'token' (each token with mlm_probability; ALPRO) or 'whole_word'
      # (round(mlm_probability * L) positions, whole words; All-in-one: text_ops.whole_word_mask)
      mlm_masking="token",
      prefetch=2, manual_dir="",  # manual_dir: raw copies of real datasets (tfds build)
      # QA: train_ans2label.json path; '' = build from the train split's answers (the
      # answer_top_k most frequent, 0 = all) and write it to <workdir>/train_ans2label.json.
      answer_vocab="", answer_top_k=0,
      # ALPRO PEM entity list (unigrams.txt format: entity = first token of each line; the first
      # model.num_entities lines are used); '' = the shipped list of the training builder.
      entities="",
      # train: any data_builders/ dataset; the fields are README "Data config fields".
      # task: 'retrieval' (clip + caption) | 'qa' (clip + QA pair) | 'multiple_choice' (clip + K
      # options) | 'classification' (clip + class_prompt); resize: 'square' | 'short_side';
      # norm: 'clip' | 'imagenet'; text_field: the caption feature ('captions',
      # 'segment_captions'); mc_template: option text ({question}, {choice}, {options});
      # class_prompt: text fed with a classification clip ('' = [CLS] [SEP]).
      # mixture: ('builder[/config][:weight]', ...) one dataset per step drawn from (seed, step)
      # (ALPRO's MetaLoader); () = just builder/builder_config. augment / image_augment: '' |
      # 'temporal_randaug' | 'image_randaug' for the rows of video / image datasets
      # (docs/input_pipeline.md "Dataset mixtures and augmentation").
      # false_videos / false_texts (task 'retrieval'; All-in-one's draw_false_image /
      # draw_false_text): per row, random other clips of the split as batch key `false_video`
      # [B, F, T, H, W, C] and random captions of random clips as `false_text_ids` /
      # `false_text_mask` [B, F, L]; 0 = none (losses then take negatives from the batch).
      # antialias: the bilinear resize's antialiasing; False doubles the frames read per core
      # at 224² (README "Throughput") at the cost of mild aliasing when shrinking.
      train=ml_collections.ConfigDict(dict(
          builder="moving_shapes", builder_config="", split="train", num_frames=4,
          sampling="rand", resolution=224, crop=0, resize="square", norm="clip",
          max_text_len=40, task="retrieval", text_field="captions",
          mc_template="{question} {choice}", class_prompt="", mixture=(), augment="",
          image_augment="", false_videos=0, false_texts=0, antialias=True,
          # inputs: {batch-key prefix: ConfigDict(reader=..., feature=..., ...)}; empty = one
          # `video` input read by 'frames' from the fields above (vlx.data.modalities)
          inputs=ml_collections.ConfigDict())),
  ))
  c.optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.0, grad_clip=0.0,
      schedule=ml_collections.ConfigDict(dict(type="linear", warmup_steps=0, warmup_ratio=0.0,
                                                end_value=0.0)),
      lr_mult=ml_collections.ConfigDict(), wd_exclude=("bias", "scale", "norm", "LayerNorm")))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=1000, log_every=50, eval_every=0, ckpt_every=1000, keep=3, grad_accum=1))
  # mesh.strategy: 'custom' (axes + rules below), 'dp' (params replicated), 'fsdp' (params and
  # optimizer state sharded over all devices), 'dp_fsdp' (sharded within fsdp_size devices,
  # 0 = one host's); named strategies replace axes and rules (vlx/sharding.py RULE_TABLES).
  c.mesh = ml_collections.ConfigDict(dict(
      strategy="custom", fsdp_size=0,
      axes=(("data", -1), ("fsdp", 1), ("model", 1)),
      rules=(("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "model"),
             ("heads", "model"), ("vocab", "model"), ("proj", None))))
  # bert_dir / vit_file: public backbones for training from scratch (a Hugging Face BERT folder,
  # a timm ViT state dict); see vlx/convert/backbones.py.
  # reinit: key regexes that keep their fresh init when training starts from those weights.
  c.init = ml_collections.ConfigDict(dict(from_converted="", from_checkpoint="", bert_dir="",
                                          vit_file="", reinit=()))
  c.evals = ml_collections.ConfigDict()
  return c


def _eval_data(**fields) -> dict:
  """The data fields every eval block has (as config.data.train's; crops are centred)."""
  out = dict(builder="moving_shapes", builder_config="", split="test", num_frames=4,
             sampling="uniform", resolution=224, crop=0, resize="square", norm="clip",
             max_text_len=40, batch_size=32, every=0, antialias=True)
  out.update(fields)
  return out


def retrieval_eval(**overrides) -> ml_collections.ConfigDict:
  """One `config.evals.<name>` block of type 'retrieval' (fields of README 'Config schema')."""
  e = ml_collections.ConfigDict(_eval_data(
      type="retrieval", mode="vtc", text_field="captions",
      all_captions=False,  # all_captions: one text row per caption (else the first caption)
      num_views=1,  # > 1: average the scores over that many random samplings of every clip
      # metric code (vlx.evals.retrieval): 'rounded_stable' (4-decimal rounding, stable sort,
      # a video's last caption is its ground truth) or 'tie_aware' (no rounding, tie rules)
      protocol="rounded_stable"))
  e.update(overrides)
  return e


def qa_eval(**overrides) -> ml_collections.ConfigDict:
  """One `config.evals.<name>` block of type 'qa' (open-ended video QA accuracy, ALPRO §6.2).

  qtypes: the per-type accuracies reported; qtype_source: 'first_word' of the question (the
  MSRVTT-QA / MSVD-QA wh-word types) or 'feature' (the builder's qa/qtype strings)."""
  e = ml_collections.ConfigDict(_eval_data(
      type="qa", task="qa", num_frames=16,
      qtypes=("what", "who", "how", "where", "when"), qtype_source="first_word",
      # 'oov_wrong': an answer outside the vocabulary counts as wrong; 'oov_excluded': such
      # questions leave the denominator (vlx.evals.qa)
      protocol="oov_wrong"))
  e.update(overrides)
  return e


def mc_eval(**overrides) -> ml_collections.ConfigDict:
  """One `config.evals.<name>` block of type 'multiple_choice' (accuracy over K options).

  mc_template: how question + option form each option text ({question}, {choice}, {options} =
  all options); the options alone when the example's question is ''."""
  e = ml_collections.ConfigDict(_eval_data(
      type="multiple_choice", task="multiple_choice", mc_template="{question} {choice}"))
  e.update(overrides)
  return e


def classification_eval(**overrides) -> ml_collections.ConfigDict:
  """One `config.evals.<name>` block of type 'classification' (video -> ClassLabel accuracy).

  class_prompt: the text fed with every clip ('' = [CLS] [SEP]); num_views: evenly spread
  temporal windows per video, one batch row each (same example_index): average their logits."""
  e = ml_collections.ConfigDict(_eval_data(
      type="classification", task="classification", class_prompt="", num_views=1))
  e.update(overrides)
  return e


# --- Preset modifiers: `--config FILE:<preset>,<modifier>` ------------------------------------
# A modifier rewrites a finished config; `with_modifiers` strips the modifier names from the
# preset string before the file's own get_config sees it, so every config file takes them.
OWN_BUILDER = "video_text"   # data_builders/video_text: the user's own videos (README)


def _first_of_type(evals: ml_collections.ConfigDict, kind: str) -> list[str]:
  return [name for name, e in evals.items() if e.get("type") == kind]


def own_videos(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Points training and evaluation at the user's `video_text` dataset (README "Your own
  videos"): the train split trains, the val split evaluates. Retrieval configs use its
  'captions' config (eval over every caption); classification configs its 'labels' config.
  Mixtures are cleared; everything else (model, frames, optimiser, init) stays as the config
  set it, so `:demo,own` is the demo recipe and `:own` the paper recipe on your videos."""
  t = c.data.train
  task = t.get("task", "retrieval") or "retrieval"
  kinds = {"retrieval": ("captions", "retrieval"), "classification": ("labels", "classification")}
  if task not in kinds:
    raise ValueError(f"preset modifier 'own' trains on your video_text dataset, which has "
                     f"captions or labels; this config's task is {task!r} (use a retrieval or "
                     "classification config, e.g. configs/alpro_msrvtt_ret.py:demo,own)")
  builder_config, kind = kinds[task]
  t.update(builder=OWN_BUILDER, builder_config=builder_config, split="train", mixture=())
  old = c.evals
  names = _first_of_type(old, kind)
  if names:
    blocks = [ml_collections.ConfigDict(old[n].to_dict()) for n in names]
  else:  # e.g. a pre-training config without evals: evaluate with the training geometry
    make = retrieval_eval if kind == "retrieval" else classification_eval
    blocks = [make(num_frames=t.num_frames, resolution=t.resolution, crop=t.crop,
                   resize=t.resize, norm=t.norm, max_text_len=t.max_text_len)]
  evals = {}
  for block in blocks:
    block.update(builder=OWN_BUILDER, builder_config=builder_config, split="val")
    if kind == "retrieval":
      block.all_captions = True
    name = OWN_BUILDER if len(blocks) == 1 else f"{OWN_BUILDER}_{block.get('mode', 'vtc')}"
    evals[name] = block
  c.evals = ml_collections.ConfigDict(evals)
  return c


MODIFIERS = {"own": own_videos}


def split_modifiers(arg: str | None) -> tuple[str, list[str]]:
  """'demo,own' -> ('demo', ['own']): the preset string without modifiers, and the modifiers."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  mods = [p for p in parts if p in MODIFIERS]
  return ",".join(p for p in parts if p not in MODIFIERS), mods


def with_modifiers(get_config):
  """Wraps a config file's get_config so its preset string may also name MODIFIERS."""

  @functools.wraps(get_config)
  def wrapped(arg: str | None = None) -> ml_collections.ConfigDict:
    base, mods = split_modifiers(arg)
    c = get_config(base)
    for name in mods:
      c = MODIFIERS[name](c)
    return c
  return wrapped
