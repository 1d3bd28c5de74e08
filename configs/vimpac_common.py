"""Shared pieces of the VIMPAC configs (shared/reference/vimpac/spec.md §1, §3, §5).

Model options (`--config configs/vimpac_<task>.py:<option>`): '' = the released small model
(6 layers, 512 wide, frame 128), `large` (24 layers, 1024 wide, halved attention and MLP, frame
128) and `large_frame256` (the same at frame 256: 32x32 codes). UCF101 / HMDB51 take `split2` /
`split3` too (e.g. `:large,split2`). `demo` / `tiny` presets: small models on moving_shapes.

Token data (spec §1). Clips are `clip_len` = 5 frames at FRAME_RATE = 2 fps of DALL-E dVAE codes,
PAD (8193) after the end of a short video. The token datasets are written by `python -m
vlx.tokenize` from a frames dataset (built by vlx-tfds): `--fit crop` at `--grid` = frame_size / 8
with `--views`: the 12 training views `flip2_crop3_scale2` (hflip x top/center/bottom crop x
short side frame_size and frame_size * 160 / 128; SSV2 `crop3_scale2`, 6, no flip), the 3 test
crops `crop3` (SSV2: `center`). A training row reads one random stored view and one random
clip; evaluation reads every crop x `test_clips` uniform clips, crop-major. The reference stores
16 fps frames and takes every 8th; here the stride is the source dataset's fps / FRAME_RATE
(SOURCE_FPS), which samples the same 2 fps clips from fewer stored frames.

Demo / tiny (no dVAE, no download): the `frame_tokens` reader turns moving_shapes frames into
quantised 8x8-patch colour codes (vlx/data/modalities/frame_tokens.py), a stand-in for dVAE
tokens with the same shapes and the same clip / view sampling.
"""
from __future__ import annotations

import ml_collections

from configs import common
from vlx.models.vimpac.model import PAD_TOKEN_ID, model_config

MODEL_VARIANTS = ("large", "large_frame256")     # '' = small
SPLITS = ("split1", "split2", "split3")
FRAME_RATE = 2                                   # clip frames per second (released scripts)
# frames per second stored by each source builder config (data_builders/*)
SOURCE_FPS = {"howto100m/whole_videos": 2, "ssv2/default": 6, "diving48/fps16": 16,
              "ucf101": 4, "hmdb51": 8, "kinetics400/fps8": 8}
TRAIN_VIEWS, TRAIN_VIEWS_NO_FLIP = "flip2_crop3_scale2", "crop3_scale2"
TEST_VIEWS, TEST_VIEWS_CENTER = "crop3", "center"
NUM_VIEWS = {"flip2_crop3_scale2": 12, "crop3_scale2": 6, "crop3": 3, "center": 1}
CONVERTED = {"": "converted/vimpac_small", "large": "converted/vimpac_large_frame128",
             "large_frame256": "converted/vimpac_large_frame256"}
# wd: no decay on biases and the backbone's LayerNorm scales; the mask head's LN and the BN
# scales are decayed (spec §3.5)
WD_EXCLUDE = (r"bias$", r"^backbone/.*(norm|ln)/scale$")
DEMO = dict(grid=8, clip_len=5, levels=4, batch=32)
TINY = dict(grid=4, clip_len=3, levels=4, batch=8)


def parse(arg: str | None, *, splits: bool = False) -> tuple[str, str, str]:
  """'demo' / 'large' / 'large_frame256,split2' ... -> (preset, model variant, split)."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  variants = [p for p in parts if p in MODEL_VARIANTS]
  chosen = [p for p in parts if p in SPLITS]
  if chosen and not splits:
    raise ValueError(f"VIMPAC option {chosen[0]!r}: only the UCF101 / HMDB51 configs have splits")
  if len(variants) > 1 or len(chosen) > 1:
    raise ValueError(f"VIMPAC config options {variants + chosen}: pick at most one model of "
                     f"{MODEL_VARIANTS} and one split of {SPLITS}")
  preset = common.parse_preset(",".join(p for p in parts if p not in MODEL_VARIANTS + SPLITS))
  if variants and preset:
    raise ValueError(f"VIMPAC option {variants[0]!r} is a paper-size model; the {preset!r} "
                     "preset has its own small model")
  return preset, (variants[0] if variants else ""), (chosen[0] if chosen else "split1")


def vimpac_model(preset: str, variant: str = "") -> ml_collections.ConfigDict:
  """config.model: the released sizes, or the small demo / tiny models."""
  if preset == "":
    return model_config(variant or "small")
  m = model_config("tiny")
  sizes = DEMO if preset == "demo" else TINY
  m.update(frame_size=sizes["grid"] * 8, clip_len=sizes["clip_len"])
  if preset == "demo":
    m.update(hidden=128, layers=2, nce_proj_layers=2, nce_proj_hid_dim=256)
  else:
    m.update(layers=1, nce_proj_layers=2, nce_proj_hid_dim=32)
  return m


def token_input(m: ml_collections.ConfigDict, *, stride: int, clips: int = 0,
                spatial_views: int = 0, test_clips: int = 1) -> ml_collections.ConfigDict:
  """A `token_grid` input over a vlx.tokenize dataset (feature `vq_tokens`)."""
  side = int(m.frame_size) // 8
  return ml_collections.ConfigDict(dict(
      reader="token_grid", feature="vq_tokens", key="vq_tokens", num_frames=int(m.clip_len),
      height=side, width=side, stride=stride, pad_id=PAD_TOKEN_ID, clips=clips,
      spatial_views=spatial_views, test_clips=test_clips))


def frame_token_input(m: ml_collections.ConfigDict, preset: str, *, stride: int, clips: int = 0,
                      test_clips: int = 1) -> ml_collections.ConfigDict:
  """The demo / tiny stand-in: quantised patch colours of moving_shapes frames."""
  sizes = DEMO if preset == "demo" else TINY
  return ml_collections.ConfigDict(dict(
      reader="frame_tokens", feature="video", key="vq_tokens", num_frames=int(m.clip_len),
      grid=sizes["grid"], levels=sizes["levels"], stride=stride, pad_id=PAD_TOKEN_ID,
      clips=clips, test_clips=test_clips))


def token_config(source_config: str, m: ml_collections.ConfigDict, views: str) -> str:
  """The builder config `python -m vlx.tokenize --config C --grid G --fit crop --views V` writes."""
  return f"{source_config}_g{int(m.frame_size) // 8}_{views}"


def stride_of(builder: str, config: str) -> int:
  fps = SOURCE_FPS.get(f"{builder}/{config}", SOURCE_FPS.get(builder))
  return max(int(fps // FRAME_RATE), 1)


def base(preset: str, variant: str, objectives: dict[str, float]) -> ml_collections.ConfigDict:
  """Model, objectives, AdamW with the reference's decay exclusions, grad clip 1, no text."""
  c = common.base_config()
  c.model = vimpac_model(preset, variant)
  c.objectives = ml_collections.ConfigDict(objectives)
  c.optim.update(name="adamw", eps=1e-8, grad_clip=1.0, wd_exclude=WD_EXCLUDE)
  c.optim.schedule.update(type="linear", warmup_steps=0, warmup_ratio=0.1, end_value=0.0)
  # rows carry no text: the 'none' vocabulary gives every row [CLS] [SEP], which the model ignores
  c.data.update(tokenizer="none")
  c.data.train.update(max_text_len=2, class_prompt="")
  return c


def moving_shapes_block(preset: str) -> dict:
  """The data fields of a demo / tiny block (moving_shapes frames)."""
  return dict(builder="moving_shapes", builder_config="" if preset == "demo" else "tiny",
              max_text_len=2)


def classification_eval(c: ml_collections.ConfigDict, *, builder: str, builder_config: str,
                        split: str, token_input_cfg: ml_collections.ConfigDict, batch_size: int,
                        ) -> ml_collections.ConfigDict:
  """Top-1 / top-5 over every view of a video: the softmax of each view averaged (spec §5)."""
  views = max(int(token_input_cfg.get("spatial_views", 0)), 1) * int(token_input_cfg.test_clips)
  return common.classification_eval(
      builder=builder, builder_config=builder_config, split=split, max_text_len=2,
      num_frames=int(c.model.clip_len), inputs=ml_collections.ConfigDict(dict(
          vq_tokens=token_input_cfg)), num_views=views, average="probs", batch_size=batch_size)


FINETUNE = dict(batch=128, epochs=50, warmup=0.1, weight_decay=0.01, lr={"": 1e-4, "large": 5e-5,
                "large_frame256": 5e-5})
PAPER_TEST_CLIPS = 10      # the paper's 3 crops x 10 clips (the scripts' last test: 2, 5, 10)


def finetune_config(arg: str | None, *, builder: str, builder_config: str, num_classes: int,
                    train_examples: int, test_split: str, epochs: int = FINETUNE["epochs"],
                    flip: bool = True, test_crops: bool = True, splits: bool = False
                    ) -> ml_collections.ConfigDict:
  """Action classification (spec §5): cls_fc on the CLS output (zero init), cross entropy,
  AdamW (0.9, 0.999), weight decay 0.01, warm-up 0.1, grad clip 1, batch 128, from the
  converted pre-trained model (`python -m vlx.convert --family vimpac --checkpoint
  snap/pretrain/<name>/last --out converted/vimpac_<name>`). Eval `test`: 3 crops x 10 clips
  (SSV2: the centre crop), softmax averaged over the views. `demo`: from scratch on
  moving_shapes' `colour` config (8 colour classes; the frame_tokens stand-in), 2 uniform clips
  per video; `tiny`: the tiny clips' 8 motion directions (tests: shapes and plumbing only).

  Why colour and not motion direction in the demo: from scratch, VIMPAC's factorised attention
  with the CLS taken as the mean over rows has no first-order path from per-frame codes to
  motion (the CLS of a T row sees no position, that of an H / W row no time), and a zero-init
  classifier passes no gradient until it has a signal; measured on this demo (batch 32, 2
  layers): direction stays at chance (loss ln 8) for ~650 steps at lr 1e-3 and reaches 29 %
  train top-1 by 1,000; at batch 16 / lr 2e-3 it stays at chance for all 1,200 steps. Colour
  reaches 99 % train top-1 in 300 steps. The paper fine-tunes a pre-trained backbone."""
  preset, variant, split = parse(arg, splits=splits)
  c = base(preset, variant, dict(classification=1.0))
  m = c.model
  m.update(mlm_head=False, nce_head=False)
  c.optim.update(b1=0.9, b2=0.999, weight_decay=FINETUNE["weight_decay"])
  c.data.train.task = "classification"
  if preset == "":
    m.num_classes = num_classes
    source = split if splits else builder_config
    stride = stride_of(builder, source)
    train_views = TRAIN_VIEWS if flip else TRAIN_VIEWS_NO_FLIP
    test_views = TEST_VIEWS if test_crops else TEST_VIEWS_CENTER
    steps = -(-epochs * train_examples // FINETUNE["batch"])
    c.init.from_converted = CONVERTED[variant]
    c.data.update(global_batch_size=FINETUNE["batch"], shuffle_buffer=10_000)
    c.data.train.update(builder=f"{builder}_vq", builder_config=token_config(source, m, train_views),
                        split="train", inputs=ml_collections.ConfigDict(dict(
                            vq_tokens=token_input(m, stride=stride,
                                                  spatial_views=NUM_VIEWS[train_views]))))
    c.optim.update(lr=FINETUNE["lr"][variant])
    c.optim.schedule.update(warmup_ratio=FINETUNE["warmup"])
    c.train.update(num_steps=steps, log_every=50, ckpt_every=max(steps // epochs, 1) * 5, keep=2)
    test_input = token_input(m, stride=stride, spatial_views=NUM_VIEWS[test_views],
                             test_clips=PAPER_TEST_CLIPS)
    c.evals = ml_collections.ConfigDict(dict(test=classification_eval(
        c, builder=f"{builder}_vq", builder_config=token_config(source, m, test_views),
        split=test_split, token_input_cfg=test_input, batch_size=64)))
    return c
  m.num_classes = 8                       # demo: colours; tiny: motion directions
  block = moving_shapes_block(preset)
  if preset == "demo":
    block["builder_config"] = "colour"    # label = the shapes' colour (see the docstring)
  c.data.update(global_batch_size=DEMO["batch"] if preset == "demo" else TINY["batch"],
                shuffle_buffer=4000 if preset == "demo" else 64)
  stride = 2 if preset == "demo" else 1   # 16 fps frames -> 8 fps clips (the frame-rate stride)
  c.data.train.update(split="train", **block, inputs=ml_collections.ConfigDict(dict(
      vq_tokens=frame_token_input(m, preset, stride=stride))))
  test_input = frame_token_input(m, preset, stride=stride, test_clips=2)
  if preset == "demo":
    c.optim.update(lr=5e-4, weight_decay=0.01)
    c.train.update(num_steps=300, log_every=25, ckpt_every=300, keep=1)
    split_name = "test"
  else:
    c.optim.update(lr=1e-3)
    c.train.update(num_steps=2, log_every=1, ckpt_every=2, keep=1)
    split_name = "test"
  ev = classification_eval(c, builder="moving_shapes", builder_config=block["builder_config"],
                           split=split_name, token_input_cfg=test_input,
                           batch_size=100 if preset == "demo" else 8)
  c.evals = ml_collections.ConfigDict({"moving_shapes_test": ev})
  return c
