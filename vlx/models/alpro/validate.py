"""ALPRO's config checks (family contract `validate_config`): input geometry and PEM fields.

Called by vlx.config_validation.validate after the generic checks of train / optim / objectives;
each ValueError names the field (the caller turns it into a ConfigError).
"""
from __future__ import annotations

import ml_collections


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ValueError(msg)


def check_video_input(config: ml_collections.ConfigDict) -> None:
  """Training clips fit the video encoder: frames = model.video.num_frames (the temporal
  embedding table) and crop (or resolution) = model.video.img_size (the spatial table)."""
  video, train = config.model.get("video"), config.data.train
  if video is None:
    return
  if "num_frames" in video:
    _check(int(train.num_frames) == int(video.num_frames),
           f"config.data.train.num_frames={train.num_frames} != "
           f"config.model.video.num_frames={video.num_frames}")
  if "img_size" in video:
    size = int(train.get("crop", 0) or train.resolution)
    _check(size == int(video.img_size),
           f"config.data.train crop/resolution={size} != config.model.video.img_size="
           f"{video.img_size}")


def check_pem(config: ml_collections.ConfigDict) -> None:
  """PEM (spec §5.4) needs model.pem (the PEM head and the frozen prompter) on a pretrain head;
  init.prompter is only read with it."""
  m = config.model
  pem_on = bool(m.get("pem", False))
  weight = float(config.objectives.get("pem", 0.0) or 0.0)
  _check(not (weight > 0 and not pem_on),
         f"config.objectives.pem={weight} needs config.model.pem=True (the PEM head and the "
         "frozen prompter); set it or set config.objectives.pem=0")
  _check(not pem_on or m.get("head", "pretrain") == "pretrain",
         f"config.model.pem=True needs config.model.head='pretrain', not {m.get('head')!r}")
  prompter = config.get("init", {}).get("prompter", "")
  _check(not (prompter and not pem_on),
         f"config.init.prompter={prompter!r} is set but config.model.pem is False: the prompter "
         "is only used by PEM (set --config.model.pem=True)")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Family hook: raises ValueError naming the first bad field."""
  check_video_input(config)
  check_pem(config)
