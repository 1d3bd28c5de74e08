"""moving_shapes: a synthetic video-language dataset rendered locally (no downloads).

Each clip shows one or two coloured shapes moving in one of eight directions, with templated
captions, QA pairs, a five-way multiple-choice question, a class label (the direction; the
`colour` config: the colour) and an audio tone whose
pitch encodes the colour (`audio`: float32 mono at config.sample_rate, num_frames / fps seconds;
read it with the audio reader, e.g. data.train.inputs.audio = ConfigDict(reader='audio',
feature='audio', stored_rate=8000, seconds=1.0), see vlx.data.modalities.audio). Clips are a pure
function of (split, example index): two builds are identical. vlx.data.pipeline builds it on first use; by hand:
  python -m vlx.data.pipeline --builder=moving_shapes --data_dir=DIR [--config=tiny]
(or `tfds build data_builders/moving_shapes ...` where the tfds CLI has apache_beam).
"""
from __future__ import annotations

import dataclasses
import io
import random
import zlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from data_builders.moving_shapes import captions as cap
from data_builders.moving_shapes import render

SPLITS = ("train", "val", "test")
LABEL_NAMES = {"direction": cap.DIRECTIONS, "colour": tuple(cap.COLOURS), "shape": cap.SHAPES}


@dataclasses.dataclass
class MovingShapesConfig(tfds.core.BuilderConfig):
  """Split sizes and clip geometry; audio lasts num_frames / fps seconds."""
  num_train: int = 4000
  num_val: int = 300
  num_test: int = 300
  num_frames: int = 16
  resolution: int = 64
  fps: int = 16
  sample_rate: int = 8000
  # which attribute the ClassLabel `label` holds (classification demos): 'direction' (motion,
  # needs temporal reasoning) or a per-frame one such as 'colour' / 'shape'
  label_attribute: str = "direction"

  @property
  def label_names(self) -> tuple[str, ...]:
    return LABEL_NAMES[self.label_attribute]

  @property
  def num_audio_samples(self) -> int:
    return int(round(self.num_frames / self.fps * self.sample_rate))


def encode_jpeg(frame: np.ndarray) -> bytes:
  """JPEG without chroma subsampling: small saturated shapes keep their colour."""
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=95, subsampling=0)
  return buf.getvalue()


def example_seed(split: str, index: int) -> int:
  """Stable across processes and Python versions (no hash randomisation)."""
  return zlib.crc32(f"moving_shapes/{split}/{index}".encode())


def make_example(split: str, index: int, config: MovingShapesConfig) -> dict:
  """The full example dict of clip `index` of `split` (video as a list of JPEG bytes)."""
  seed = example_seed(split, index)
  py_rng = random.Random(seed)
  np_rng = np.random.default_rng(seed)
  a = cap.sample_attributes(py_rng)
  frames = render.render_clip(a, num_frames=config.num_frames, resolution=config.resolution,
                              rng=np_rng)
  choices, answer = cap.multiple_choice(a, py_rng)
  return dict(
      video=[encode_jpeg(f) for f in frames],
      captions=cap.captions(a),
      qa=cap.questions(a),
      mc_choices=choices,
      mc_answer=answer,
      label=getattr(a, config.label_attribute),
      label_name=getattr(a, config.label_attribute),
      audio=render.render_audio(a, num_samples=config.num_audio_samples,
                                sample_rate=config.sample_rate, rng=np_rng),
      video_id=f"{split}_{index:06d}",
      colour=a.colour, shape=a.shape, direction=a.direction, size=a.size, speed=a.speed,
      background=a.background, num_objects=a.num_objects,
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for moving_shapes."""

  # TFDS derives this from the package via `importlib_resources`, which its dependencies do not
  # always install; the module file is all it needs (checksums.tsv would sit beside it).
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MovingShapesConfig(name="default", description="4000/300/300 clips, 16 frames at 64x64."),
      MovingShapesConfig(name="tiny", description="64/16/16 clips, 8 frames at 32x32 (tests).",
                         num_train=64, num_val=16, num_test=16, num_frames=8, resolution=32,
                         fps=8),
      MovingShapesConfig(name="colour", description="the default clips; `label` = the colour of "
                         "the shapes (8 classes) instead of the motion direction.",
                         label_attribute="colour"),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    text_seq = tfds.features.Sequence(tfds.features.Text())
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(c.num_frames, c.resolution, c.resolution, 3),
                                         encoding_format="jpeg"),
            "captions": text_seq,
            "qa": tfds.features.Sequence({
                "question": tfds.features.Text(), "answer": tfds.features.Text(),
                "qtype": tfds.features.Text()}),
            "mc_choices": text_seq,
            "mc_answer": np.int32,
            "label": tfds.features.ClassLabel(names=list(c.label_names)),
            "label_name": tfds.features.Text(),
            "audio": tfds.features.Audio(shape=(c.num_audio_samples,), dtype=np.float32,
                                         sample_rate=c.sample_rate),
            "video_id": tfds.features.Text(),
            "colour": tfds.features.Text(), "shape": tfds.features.Text(),
            "direction": tfds.features.Text(), "size": tfds.features.Text(),
            "speed": tfds.features.Text(), "background": tfds.features.Text(),
            "num_objects": np.int32,
        }),
        supervised_keys=None,
        homepage="https://github.com/vlx (synthetic, generated locally)",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    c = self.builder_config
    sizes = dict(train=c.num_train, val=c.num_val, test=c.num_test)
    return {split: self._generate_examples(split, sizes[split]) for split in SPLITS}

  def _generate_examples(self, split: str, num: int):
    for index in range(num):
      example = make_example(split, index, self.builder_config)
      yield example["video_id"], example
