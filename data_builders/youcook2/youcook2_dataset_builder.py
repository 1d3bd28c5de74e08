"""youcook2: YouCook2 cooking videos, one example per annotated recipe step (caption segment).

youcookii_annotations_trainval.json: {"database": {<youtube id>: {subset, recipe_type, duration,
annotations: [{id, segment: [start, end] seconds, sentence}]}}}; raw videos live in
raw_videos/<subset>/<recipe_type>/<youtube id>.<mp4|mkv|webm>. Each segment is cut from its video
(VideoRecord start/end) and carries captions = [sentence]; subsets training / validation become
the splits train / validation (the test subset has no captions).
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

ANNOTATION_FILE = "youcookii_annotations_trainval.json"
VIDEO_DIR = "raw_videos"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
SUBSETS = {"training": "train", "validation": "validation"}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download YouCook2 from http://youcook2.eecs.umich.edu/download: the annotations
(youcookii_annotations_trainval.tar.gz) and the raw videos (fetched from YouTube with the
release's scripts/download_youtube.py, which writes raw_videos/<subset>/<recipe_type>/<id>.<ext>).
manual_dir is the release's YouCookII/ folder:
  manual_dir/
    annotations/youcookii_annotations_trainval.json   (or directly in manual_dir/)
    raw_videos/training/101/0O4bxhpFX9o.mp4 ...
    raw_videos/validation/101/xHr8X2Wpmno.mkv ...
Files are found by name anywhere under manual_dir (5 folder levels: manual_dir may also be the
folder holding YouCookII/, the json unpacked beside raw_videos/, the videos in one folder ...).
Videos that are no longer on YouTube are counted as missing and skipped.
"""



def layout(root) -> bb.Layout:
  return bb.Layout(root, "youcook2", video_dirs=(VIDEO_DIR, ""),
                   video_extensions=(*VIDEO_EXTENSIONS, *rl.VIDEO_EXTENSIONS))


def _video(lay: bb.Layout, subset: str, recipe: str, vid: str) -> str:
  """<vid>.<ext> in any folder (raw_videos/<subset>/<recipe>/ as the download script writes
  it, one flat folder, ...); that documented place with .mp4 when absent."""
  return lay.video(vid, os.path.join(lay.root, VIDEO_DIR, subset, recipe, f"{vid}.mp4"))


def _need(obj, key: str, path: pathlib.Path, where: str):
  if not isinstance(obj, dict) or obj.get(key) in (None, ""):
    raise bb.AnnotationError(str(path), None, f"{where}.{key}", "a value")
  return obj[key]


def _segment(ann: dict, path: pathlib.Path, where: str) -> tuple[float, float]:
  seg = _need(ann, "segment", path, where)
  try:
    start, end = (float(t) for t in seg)
  except (TypeError, ValueError):
    raise bb.AnnotationError(str(path), None, f"{where}.segment",
                             "[start, end] in seconds") from None
  if not 0 <= start <= end:
    raise bb.AnnotationError(str(path), None, f"{where}.segment",
                             f"0 <= start <= end, got {list(seg)}")
  return start, end


def records(path: pathlib.Path, root) -> dict[str, list[bb.VideoRecord]]:
  """{'train': [...], 'validation': [...]}: one VideoRecord per annotated segment (`root`: the
  manual dir or its Layout)."""
  lay = root if isinstance(root, bb.Layout) else layout(root)
  database = _need(bb.read_json(path), "database", path, "<root>")
  out: dict[str, list[bb.VideoRecord]] = {split: [] for split in SUBSETS.values()}
  for vid, info in database.items():
    where = f"database.{vid}"
    subset = _need(info, "subset", path, where)
    if subset not in SUBSETS:
      continue  # 'testing' videos carry no captions
    recipe = str(_need(info, "recipe_type", path, where))
    anns = _need(info, "annotations", path, where)
    if not isinstance(anns, list):
      raise bb.AnnotationError(str(path), None, f"{where}.annotations", "a list of segments")
    video = _video(lay, subset, recipe, vid)
    for j, ann in enumerate(anns):
      at = f"{where}.annotations[{j}]"
      start, end = _segment(ann, path, at)
      sentence = str(_need(ann, "sentence", path, at)).strip()
      seg_id = ann.get("id", j)
      if not isinstance(seg_id, int):
        raise bb.AnnotationError(str(path), None, f"{at}.id", "an integer segment index")
      out[SUBSETS[subset]].append(bb.VideoRecord(
          key=f"{vid}_{j:03d}", video_path=video, start=start, end=end,
          fields=dict(captions=[sentence], recipe_type=recipe, segment_id=seg_id)))
  return out


class Builder(bb.VideoDatasetBuilder):
  """YouCook2 caption segments from the official annotations and raw videos (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "http://youcook2.eecs.umich.edu/"
  # Steps last ~20 s on average: 1 fps keeps ~20 frames per segment (papers sample 4-16).
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=1.0, short_side=256,
                            description="Segments at 1 fps, short side 256."),
      bb.VideoBuilderConfig(name="fps4", fps=4.0, short_side=256,
                            description="Segments at 4 fps (dense sampling), short side 256."),
  ]

  def _features(self):
    return bb.caption_features(recipe_type=tfds.features.Text(), segment_id=np.int32)

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    path = lay.find(ANNOTATION_FILE, ("annotations", ""))
    if path is None:   # both splits come from it
      return {split: rl.Missing((ANNOTATION_FILE,)) for split in SUBSETS.values()}
    return records(pathlib.Path(path), lay)
