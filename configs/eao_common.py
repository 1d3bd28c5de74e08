"""Shared pieces of the Everything-at-Once configs (shared/reference/eao/spec.md §4-§6).

Model: `eao_model(preset, variant)`: the released sizes ('' = ResNet+ResNeXt tva; variants 's3d'
and 'clip' as config options `:s3d` / `:clip`), or the small demo / tiny ones. Text: token ids
from the configured tokenizer through a FROZEN front end in the model (vlx/models/eao/inputs.py):
word2vec ('words:<vocab.txt>' tokenizer + table from `config.init.word_vectors`, the directory
`python -m vlx.data.word2vec` writes) or, for the CLIP variant, OpenAI's CLIP ViT-B/32 text tower
(`config.init.clip`: ViT-B-32.pt or an open_clip state dict; CLIP BPE tokenizer).

Loss weights: the reference divides the weighted sum by Σw, so the configs carry w / Σw:
pre-training tv 1/1.5 and ta, va, t_va, v_ta, a_tv 0.1/1.5; fine-tuning all six 1/6.

Feature data (helper C's builders; the TFDS feature names below are the interface used here):
video = the `features` reader over the [2D | 3D] parts (`parts`, each part L2-normalised,
resampled to one length, concatenated: 4096-d), audio = the `features` reader over the stored
40-band log-mel spectrogram (time first, [T, 40]).

Demo / tiny (moving_shapes, no pre-computed features): video = the `frame_features` reader (a
fixed silhouette feature per frame: shape, size, count, motion, NOT colour), audio = the
moving_shapes tone (its pitch encodes the colour) through the `audio` reader at 16 kHz (stored
8 kHz), text = the shipped moving_shapes vocabulary through a random frozen word-vector table
(`model.random_word_vectors`: the demo's stand-in for word2vec).
"""
from __future__ import annotations

import functools

import ml_collections

from configs import common
from vlx.models.eao.model import model_config

PRETRAIN_WEIGHTS = dict(tv=1 / 1.5, ta=0.1 / 1.5, va=0.1 / 1.5, t_va=0.1 / 1.5, v_ta=0.1 / 1.5,
                        a_tv=0.1 / 1.5)
FINETUNE_WEIGHTS = {k: 1 / 6 for k in PRETRAIN_WEIGHTS}
VARIANTS = ("", "s3d", "clip")        # '' = ResNet-152 2D + ResNeXt-101 3D (the tva release)
MAX_WORDS = 20                        # words kept per caption (spec §4)
# GoogleNews-vectors-negative300 has 3,000,000 words; set model.word_vocab_size to the rows of
# your vectors.npy (`python -m vlx.data.word2vec --max_words N` writes fewer).
WORD2VEC_WORDS = 3_000_000
WORD2VEC_DIR = "word2vec"             # config.init.word_vectors: `python -m vlx.data.word2vec` output
CLIP_FILE = "ViT-B-32.pt"             # config.init.clip: OpenAI's CLIP ViT-B/32
# Video feature parts per variant (TFDS features of the *_features builders: msrvtt_features,
# youcook2_features, howto100m_features) and their width; the builder config of each variant
# ('' = the ResNet-152 + ResNeXt-101 release), and each part's steps per second (HowTo100M clips).
VIDEO_PARTS = {"": (("features_2d", "features_3d"), 4096), "s3d": (("features_3d",), 1024),
               "clip": (("features_2d",), 512)}
BUILDER_CONFIG = {"": "", "s3d": "s3d", "clip": "clip"}
PART_RATES = {"": {"features_2d": 1.0, "features_3d": 1.5}, "s3d": {"features_3d": 1.0},
              "clip": {"features_2d": 1.0}}
SPECTROGRAM = "audio"                 # the stored [T, 40] log-mel feature (time first)
LONG_VIDEO = ("at_once", "clips", "max", "nearest")   # evaluation strategies (spec §6)
MEL = 40
# Demo / tiny sizes (moving_shapes: 1 s clips; 8 kHz tone resampled to 16 kHz). The audio window
# is 0.96 s = 96 mel frames: a multiple of the DAVEnet stride (8 in the demo: 12 audio tokens), as
# the reference's 768 frames are of 64 (its token mask assumes it).
AUDIO_SECONDS = 0.96
DEMO = dict(num_frames=8, resolution=32, grid=8, video_dim=128, max_text_len=16, batch=64)
TINY = dict(num_frames=4, resolution=32, grid=4, video_dim=32, max_text_len=12, batch=8)


def parse(arg: str | None) -> tuple[str, str, str]:
  """'demo' / 'clip' / ',s3d,clips' ... -> (preset, variant, long-video strategy); variants and
  strategies are config options of the paper preset ('' strategy = 'at_once')."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  variants = [p for p in parts if p in VARIANTS[1:]]
  strategies = [p for p in parts if p in LONG_VIDEO[1:]]
  if len(variants) > 1 or len(strategies) > 1:
    raise ValueError(f"EAO config options {variants + strategies}: pick at most one variant of "
                     f"{VARIANTS[1:]} and one evaluation strategy of {LONG_VIDEO[1:]}")
  preset = common.parse_preset(",".join(p for p in parts
                                        if p not in VARIANTS[1:] + LONG_VIDEO[1:]))
  if (variants or strategies) and preset:
    raise ValueError(f"EAO option {(variants + strategies)[0]!r} is a paper-size option; the "
                     f"{preset!r} preset has its own small model and data")
  return preset, (variants[0] if variants else ""), (strategies[0] if strategies else "")


def eao_model(preset: str, variant: str = "") -> ml_collections.ConfigDict:
  """config.model of a preset (paper sizes per variant; small demo / tiny models)."""
  if preset == "":
    m = model_config(variant)
    if variant == "clip":
      m.update(text_input="clip", text_dim=512)
    else:
      m.update(text_input="word_vectors", word_vocab_size=WORD2VEC_WORDS)
    return m
  m = model_config("tiny")
  m.update(text_input="word_vectors", random_word_vectors=True,
           word_vocab_size=79)   # moving_shapes vocab: 80 ids, 0 = [PAD] (the zero row)
  if preset == "demo":
    # 3 DAVEnet stages: 96 mel frames -> 12 audio tokens
    m.update(text_dim=64, video_dim=DEMO["video_dim"], hidden=128, depth=1, num_heads=4,
             mlp_ratio=2.0, proj_dim=128)
    m.davenet.update(layers=(1, 1, 1), widths=(32, 32, 64, 128), kernel=9)
  else:
    m.update(text_dim=16, video_dim=TINY["video_dim"], hidden=32, depth=1, num_heads=2,
             mlp_ratio=1.0, proj_dim=32)
    m.davenet.update(layers=(1, 1), widths=(8, 8, 16), kernel=3)
  return m


def moving_shapes_inputs(sizes: dict) -> ml_collections.ConfigDict:
  """data.<block>.inputs of the demo / tiny: per-frame silhouette features + the tone."""
  return ml_collections.ConfigDict(dict(
      video=dict(reader="frame_features", feature="video", grid=sizes["grid"],
                 dim=sizes["video_dim"]),
      audio=dict(reader="audio", feature="audio", stored_rate=8000, sample_rate=16000,
                 seconds=AUDIO_SECONDS, num_mel_bins=MEL)))


def feature_inputs(variant: str, video_tokens: int, audio_frames: int
                   ) -> ml_collections.ConfigDict:
  """data.<block>.inputs of the released feature datasets (spec §4, strategy 'clip')."""
  parts, dim = VIDEO_PARTS[variant]
  return ml_collections.ConfigDict(dict(
      video=dict(reader="features", parts=parts, key="video", dim=dim, max_len=video_tokens,
                 select="first", normalize=True),    # each part L2-normalised on its own
      audio=dict(reader="features", feature=SPECTROGRAM, key="audio", dim=MEL,
                 max_len=audio_frames, select="first")))


CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"   # CLIP's BPE vocabulary (not bundled)


def tokenizer(variant: str) -> str:
  """word2vec words (vlx.data.word_tokenizer) or CLIP BPE over the caption's regex words (the
  reference's raw_text: vlx.data.clip_text_tokenizer)."""
  return f"clip_words:{CLIP_BPE}" if variant == "clip" else f"words:{WORD2VEC_DIR}/vocab.txt"


def base(preset: str, variant: str, objectives: dict[str, float]) -> ml_collections.ConfigDict:
  """Model, objectives, Adam without weight decay (torch Adam: b2 0.999, eps 1e-8), init paths."""
  c = common.base_config()
  c.model = eao_model(preset, variant)
  c.objectives = ml_collections.ConfigDict(objectives)
  c.optim.update(name="adamw", lr=5e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                 grad_clip=0.0, wd_exclude=())
  c.optim.schedule.update(type="constant", warmup_steps=0, warmup_ratio=0.0, end_value=0.0)
  c.init.word_vectors = WORD2VEC_DIR if (preset == "" and variant != "clip") else ""
  c.init.clip = CLIP_FILE if (preset == "" and variant == "clip") else ""
  c.data.train.update(task="retrieval", text_field="captions")
  return c


def moving_shapes_data(c: ml_collections.ConfigDict, preset: str) -> None:
  """Training data of the demo / tiny presets."""
  sizes = DEMO if preset == "demo" else TINY
  c.data.update(global_batch_size=sizes["batch"], tokenizer="moving_shapes",
                shuffle_buffer=4000 if preset == "demo" else 64)
  c.data.train.update(builder="moving_shapes", builder_config="" if preset == "demo" else "tiny",
                      split="train", num_frames=sizes["num_frames"], sampling="rand",
                      resolution=sizes["resolution"], max_text_len=sizes["max_text_len"],
                      inputs=moving_shapes_inputs(sizes))


def retrieval_evals(c: ml_collections.ConfigDict, preset: str, *, modes=("t2v", "t2va"),
                    **fields) -> ml_collections.ConfigDict:
  """One retrieval eval per mode, named `<split name>_<mode>` (metrics eval/<name>/r1 ...), on
  the training block's inputs read deterministically (frames 'segment_middle', audio centred).
  Paper: the reference's metric (protocol 'averaged_ties': ties averaged, R@k over the dataset's
  complete size)."""
  t = c.data.train
  base_fields = dict(builder=t.builder, builder_config=t.builder_config, split="test",
                     num_frames=t.num_frames, sampling="segment_middle", resolution=t.resolution,
                     max_text_len=t.max_text_len, text_field=t.text_field,
                     inputs=ml_collections.ConfigDict(t.inputs.to_dict()),
                     protocol="averaged_ties", all_captions=False,
                     batch_size={"": 64, "demo": 100}.get(preset, 4))
  if preset == "demo":
    base_fields["split"] = "test[:100]"
  base_fields.update(fields)
  name = fields.pop("name", "test")
  base_fields.pop("name", None)
  blocks = {}
  for m in modes:   # each block its own copy of the inputs (no shared sub-dicts)
    fields_m = dict(base_fields, inputs=ml_collections.ConfigDict(base_fields["inputs"].to_dict()))
    blocks[f"{name}_{m}"] = common.retrieval_eval(mode=m, **fields_m)
  return ml_collections.ConfigDict(blocks)


CLIP_TOKENS, CLIP_FRAMES = 12, 768   # one pre-training clip: 12 video tokens, 768 audio frames


def long_video_strategy(e: ml_collections.ConfigDict, strategy: str, *, n_clips: int) -> None:
  """The evaluation configs of spec §6 on one eval block whose inputs read the whole clip
  (48 / 72 video tokens, 3072 / 4608 audio frames): '' / 'at_once' as read; 'clips' = n_clips
  clips of 12 tokens / 768 frames embedded separately and averaged per video (the 0.7 audio
  rule); 'max' / 'nearest' = video max-pooled / nearest-resampled to 12 tokens by the reader,
  DAVEnet's audio tokens pooled to 12 in the model."""
  if strategy in ("", "at_once"):
    return
  if strategy == "clips":
    e.encode_options = dict(clips=n_clips, clip_tokens=CLIP_TOKENS, clip_frames=CLIP_FRAMES,
                            clip_min_audio=0.7)
    return
  pooling = {"max": "max_pool", "nearest": "nearest"}[strategy]
  e.inputs.video.update(max_len=CLIP_TOKENS, select=pooling)
  e.encode_options = dict(audio_max_tokens=CLIP_TOKENS, audio_pooling=pooling)


CONVERTED = {"": "converted/eao_tva", "s3d": "converted/eao_s3d", "clip": "converted/eao_clip"}


def finetune_config(preset: str, variant: str, strategy: str = "", *, builder: str, train_examples: int, batch: int,
                    lr: float, epochs: int, video_tokens: int, audio_frames: int,
                    complete_size: int, test_split: str) -> ml_collections.ConfigDict:
  """Retrieval fine-tuning (spec §6): all six pair losses at weight 1 (1/6 after the reference's
  division), Adam without weight decay at a constant lr, DAVEnet in eval mode throughout
  (`use_eval_mode_always`: running statistics, model.bn_train False), initialised from the
  converted pre-trained model (`python -m vlx.convert --family eao`; the frozen text front end
  is filled from config.init.word_vectors / init.clip). Evals: t2v, t2va and t2v+a on the test
  split with the reference's metric (ties averaged, R@k over `complete_size` queries)."""
  c = base(preset, variant, FINETUNE_WEIGHTS)
  c.model.bn_train = False
  if preset == "":
    c.init.from_converted = CONVERTED[variant]
    c.data.update(global_batch_size=batch, tokenizer=tokenizer(variant), shuffle_buffer=10_000)
    c.data.train.update(builder=builder, builder_config=BUILDER_CONFIG[variant], split="train",
                        max_text_len=MAX_WORDS + (2 if variant == "clip" else 0),
                        inputs=feature_inputs(variant, video_tokens, audio_frames))
    c.optim.lr = lr
    steps = -(-epochs * train_examples // batch)
    c.train.update(num_steps=steps, log_every=50, eval_every=0, ckpt_every=steps, keep=2)
    c.evals = retrieval_evals(c, preset, modes=("t2v", "t2va", "t2v+a"),
                              complete_size=complete_size, split=test_split,
                              name="test" if not strategy else f"test_{strategy}")
    for e in c.evals.values():
      long_video_strategy(e, strategy, n_clips=video_tokens // CLIP_TOKENS)
    return c
  moving_shapes_data(c, preset)
  if preset == "demo":   # from scratch on moving_shapes
    c.optim.update(lr=5e-4, grad_clip=5.0)
    c.train.update(num_steps=300, log_every=25, eval_every=0, ckpt_every=300, keep=1)
  else:
    c.optim.lr = 1e-3
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  c.evals = retrieval_evals(c, preset)
  return c


def _drop(block: ml_collections.ConfigDict, key: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({k: v for k, v in block.to_dict().items() if k != key})


def without_audio(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A text-video run: no audio input, the tv loss only, the evals whose mode needs no audio
  (e.g. the `own` modifier's video_text datasets, which store no audio track)."""
  c.data.train.inputs = _drop(c.data.train.inputs, "audio")
  c.objectives = ml_collections.ConfigDict(dict(tv=1.0))
  keep = {}
  for name, e in c.evals.items():
    if "a" not in e.get("mode", "t2v").replace("t2", "").replace("2t", ""):
      e.inputs = _drop(e.inputs, "audio")
      keep[name] = e
  c.evals = ml_collections.ConfigDict(keep)
  return c


OWN_FEATURES = "clip_features"     # python -m vlx.extract_features: <builder>_clip datasets
OWN_FEATURES_SUFFIX = "_clip"


def on_own_features(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper-size model on your own videos reads per-second CLIP image features of them
  (`python -m vlx.extract_features --builder video_text ...` writes `video_text_clip`): only the
  CLIP variant's video width (512) fits them; the demo / tiny models read the frames."""
  blocks = [c.data.train] + list(c.evals.values())
  if all(b.inputs.video.reader != "features" for b in blocks):
    return c
  if int(c.model.video_dim) != 512:
    raise ValueError("EAO on your own videos reads their per-second CLIP features (python -m "
                     "vlx.extract_features): use the CLIP variant, e.g. "
                     "configs/eao_msrvtt_ret.py:clip,own (or :demo,own on the frames)")
  for b in blocks:
    b.builder = common.OWN_BUILDER + OWN_FEATURES_SUFFIX
    b.inputs.video = ml_collections.ConfigDict(dict(
        reader="features", feature=OWN_FEATURES, key="video", dim=512,
        max_len=b.inputs.video.max_len, select="first", normalize=True))
  return c


OWN_AUDIO_CONFIG = "captions_audio"   # data_builders/video_text: frames + captions + audio track
OWN_AUDIO = "audio"                  # the option: `:demo,own,audio`, `:clip,own,audio`


def with_own_audio(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Your videos with their audio track (video_text's 'captions_audio' config, 16 kHz PCM): the
  log-mel spectrogram is computed by the `audio` reader (40 bands, 25 ms windows, 10 ms hop, as
  the reference's spectrograms), as many frames as the config's audio input holds."""
  for b in [c.data.train] + list(c.evals.values()):
    b.builder_config = OWN_AUDIO_CONFIG
    a = b.inputs.audio
    frames = int(a.max_len) if a.reader == "features" else int(round(a.seconds * 100))
    b.inputs.audio = ml_collections.ConfigDict(dict(
        reader="audio", feature="audio", key="audio", stored_rate=16000, sample_rate=16000,
        seconds=frames / 100, num_mel_bins=MEL))
  return c


def with_modifiers(get_config):
  """common.with_modifiers, then on the `own` videos a text-video run (video_text 'captions'
  stores no audio) or, with the option `audio`, a tri-modal one on 'captions_audio'; at paper size
  the video input reads their CLIP features (`on_own_features`)."""
  wrapped = common.with_modifiers(get_config)

  @functools.wraps(get_config)
  def get(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    audio = OWN_AUDIO in parts
    c = wrapped(",".join(p for p in parts if p != OWN_AUDIO))
    if c.data.train.builder != common.OWN_BUILDER:
      if audio:
        raise ValueError(f"EAO option {OWN_AUDIO!r} is for your own videos: add 'own' (e.g. "
                         "configs/eao_msrvtt_ret.py:demo,own,audio)")
      return c
    return on_own_features(with_own_audio(c) if audio else without_audio(c))
  return get
