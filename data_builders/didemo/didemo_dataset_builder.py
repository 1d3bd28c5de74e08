"""didemo: DiDeMo (Hendricks et al. 2017) for paragraph-to-video retrieval.

The official files (LisaAnne/LocalizingMoments data/{train,val,test}_data.json) list one moment
description per entry: {annotation_id, description, video, times, dl_link, num_segments}, where
`times` holds each annotator's [first, last] 5-second chunk (chunk k covers [5k, 5k + 5) s; videos
were annotated over their first 30 s). Retrieval papers (ClipBERT, ALPRO, All-in-one, CLIP4Clip)
join all descriptions of a video into one paragraph and retrieve whole videos with it; test is the
paper's test set (val is used for model selection).

One example per video: `captions` = [paragraph], its descriptions sorted by time (mean annotator
start, then end, then file order) and joined with spaces; `segment_captions` the descriptions in
that order and `segment_times` their [start, end] seconds from the mean annotator chunks
([5 * mean(first), 5 * (mean(last) + 1)], as CLIP4Clip averages annotators; not clipped to the
video's length).
"""
from __future__ import annotations

import collections
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

SPLIT_FILES = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}
VIDEO_DIR = "videos"
CHUNK_SECONDS = 5.0
NUM_CHUNKS = 6
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".m4v", ".3gp", ".mpg", ".mpeg", ".wmv", ".mkv",
                    ".webm", ".flv", ".mts", ".m2ts", ".dv", ".ogv")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
DiDeMo annotations: data/train_data.json, data/val_data.json, data/test_data.json of
https://github.com/LisaAnne/LocalizingMoments. Videos: download_videos_AWS.py of that repository
(YFCC100M copies on AWS, saved as <video>.mp4) plus the 13 videos in missing_videos_AWS.zip, or
download_videos.py (Flickr originals saved as <video>), or the Google Drive copy linked in
data/README.md. Put in manual_dir:

  manual_dir/
    train_data.json  val_data.json  test_data.json     (or one folder down, e.g. data/)
    videos/<video>            e.g. videos/10015567@N08_3655084291_d8b58466fa.mov
                              (or videos/<video>.mp4, as the AWS script names them)

`<video>` is the json's "video" field. Files are found by name anywhere under manual_dir (5
folder levels: e.g. LocalizingMoments-master/data/, a video folder of another name); splits whose
json is absent are not built. Missing videos are skipped and counted, not fatal.
"""



def chunk_times(times, *, file: str, index: int) -> tuple[float, float]:
  """[start, end] seconds of one description from its annotators' [first, last] chunks."""
  expected = f"a list of [first, last] chunk pairs with 0 <= first <= last < {NUM_CHUNKS}"
  pairs = []
  if isinstance(times, list):
    for t in times:
      if (isinstance(t, (list, tuple)) and len(t) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in t)
          and 0 <= t[0] <= t[1] < NUM_CHUNKS):
        pairs.append(t)
      else:
        pairs = []
        break
  if not pairs:
    raise bb.AnnotationError(file, None, f"[{index}].times", f"{expected}, got {times!r}")
  first = float(np.mean([p[0] for p in pairs]))
  last = float(np.mean([p[1] for p in pairs]))
  return CHUNK_SECONDS * first, CHUNK_SECONDS * (last + 1.0)


def read_split(path: str) -> dict[str, dict]:
  """{video: {paragraph, segment_captions, segment_times}} of one split file, file order."""
  data = bb.read_json(path)
  if not isinstance(data, list):
    raise bb.AnnotationError(path, None, "(top level)", "a JSON list of moment descriptions")
  moments: dict[str, list[tuple[float, float, int, str]]] = collections.defaultdict(list)
  for i, entry in enumerate(data):
    video = str(bb.entry_field(entry, i, "video", file=path, expected="a video name")).strip()
    text = str(bb.entry_field(entry, i, "description", file=path,
                           expected="a description")).strip()
    start, end = chunk_times(bb.entry_field(entry, i, "times", file=path,
                                         expected="annotator chunk pairs"), file=path, index=i)
    moments[video].append((start, end, i, text))
  out = {}
  for video, items in moments.items():
    items.sort()
    out[video] = dict(
        paragraph=" ".join(t for *_, t in items),
        segment_captions=[t for *_, t in items],
        segment_times=[np.array([s, e], np.float32) for s, e, *_ in items])
  return out


def layout(root) -> bb.Layout:
  """The manual dir indexed once (any video extension DiDeMo's sources use)."""
  return bb.Layout(root, "didemo", video_dirs=(VIDEO_DIR, ""),
                   video_extensions=VIDEO_EXTENSIONS)


def video_path(lay: bb.Layout, video: str) -> str:
  """<video>.mp4 (AWS) or <video> (Flickr), else any <video stem>.<ext>, in any folder; when
  absent videos/<video> (reported missing)."""
  return lay.video([video, os.path.splitext(video)[0]], os.path.join(lay.root, VIDEO_DIR, video))


def records_for(lay: bb.Layout, split: str) -> list[bb.VideoRecord]:
  return [bb.VideoRecord(key=video, video_path=video_path(lay, video),
                         fields=dict(video_id=video, captions=[m["paragraph"]],
                                     segment_captions=m["segment_captions"],
                                     segment_times=m["segment_times"]))
          for video, m in read_split(lay.require(SPLIT_FILES[split], ("", "data"))).items()]


class Builder(bb.VideoDatasetBuilder):
  """DiDeMo paragraph-to-video retrieval from the official files in manual_dir."""

  code_path = epath.Path(__file__)   # TFDS needs the module file (see moving_shapes)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/LisaAnne/LocalizingMoments"
  # Videos are 25-30 s (a few longer): 2 fps keeps 50-60 frames for the 8-16 models sample.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=2.0, short_side=256,
                            description="Paragraph retrieval; frames at 2 fps, short side 256."),
  ]

  def _features(self):
    return bb.caption_features(
        segment_captions=bb.texts(),
        segment_times=tfds.features.Sequence(tfds.features.Tensor(shape=(2,), dtype=np.float32)))

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    return rl.per_split(SPLIT_FILES, lambda split: records_for(lay, split))
