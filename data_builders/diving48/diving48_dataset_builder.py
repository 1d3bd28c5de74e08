"""diving48: Diving48 (V2 labels) fine-grained dive classification, 48 classes.

Diving48_V2_{train,test}.json list {vid_name, label, start_frame, end_frame}; Diving48_vocab.json
lists the 48 classes in label order, each as [takeoff, somersault, twist, flight position]
(label_name joins them with spaces). The released rgb/<vid_name>.mp4 files are already trimmed to
the dive, so the whole file is stored (start_frame/end_frame are kept as features).
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

VIDEO_DIR = "rgb"
VOCAB = "Diving48_vocab.json"
SPLIT_FILES = {"train": "Diving48_V2_train.json", "test": "Diving48_V2_test.json"}
ANNOTATION_DIRS = ("", "annotations")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from the Diving48 page (http://www.svcl.ucsd.edu/projects/resound/dataset.html):
  Diving48_rgb.tar.gz (videos), Diving48_V2_train.json, Diving48_V2_test.json, Diving48_vocab.json
and arrange manual_dir as:
  manual_dir/
    Diving48_V2_train.json  Diving48_V2_test.json  Diving48_vocab.json
    rgb/-mmq0PT-u8k_00155.mp4 ...        (`tar xzf Diving48_rgb.tar.gz -C manual_dir`)
Files are found by name anywhere under manual_dir (5 folder levels: the videos unpacked without
rgb/, the json files in a folder of their own, ...); a split whose json is absent is not built.
"""



def read_vocab(path: pathlib.Path) -> list[str]:
  """Diving48_vocab.json -> 48 class names ("Back 15som 05Twis FREE"), label order."""
  vocab = bb.read_json(path)
  if not isinstance(vocab, list) or not vocab:
    raise bb.AnnotationError(str(path), None, "<root>", "a list of [takeoff, somersault, twist, "
                             "flight] lists, one per class")
  names = []
  for i, entry in enumerate(vocab):
    if not isinstance(entry, list) or not entry or not all(isinstance(w, str) for w in entry):
      raise bb.AnnotationError(str(path), None, f"[{i}]", "a list of strings")
    names.append(" ".join(entry))
  return names


def layout(root) -> bb.Layout:
  return bb.Layout(root, "diving48", video_dirs=(VIDEO_DIR, ""))


def read_split(path: pathlib.Path, lay: bb.Layout, names: list[str]) -> list[bb.VideoRecord]:
  """Diving48_V2_<split>.json -> one VideoRecord per entry (vid_name, label in range)."""
  entries = bb.read_json(path)
  if not isinstance(entries, list):
    raise bb.AnnotationError(str(path), None, "<root>", "a list of {vid_name, label, "
                             "start_frame, end_frame} objects")
  out = []
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict):
      raise bb.AnnotationError(str(path), None, f"[{i}]", "an object")
    for field in ("vid_name", "label", "start_frame", "end_frame"):
      bb.entry_field(entry, i, field, file=path)
    label = entry["label"]
    if not isinstance(label, int) or not 0 <= label < len(names):
      raise bb.AnnotationError(str(path), None, f"[{i}].label",
                               f"an integer in [0, {len(names)}) (Diving48_vocab.json)")
    vid = str(entry["vid_name"])
    out.append(bb.VideoRecord(
        key=vid, video_path=lay.video(vid, os.path.join(lay.root, VIDEO_DIR, f"{vid}.mp4")),
        fields=dict(label=label, label_name=names[label],
                    start_frame=int(entry["start_frame"]), end_frame=int(entry["end_frame"]))))
  return out


class Builder(bb.VideoDatasetBuilder):
  """Diving48 V2 from the official json files and rgb videos (manual download)."""

  code_path = epath.Path(__file__)
  RELEASE_NOTES = {"1.0.0": "Initial release (V2 labels)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "http://www.svcl.ucsd.edu/projects/resound/dataset.html"
  # Dives last ~3-5 s and differ in fast rotations: 8 fps keeps ~32 frames; the released videos
  # are small (short side ~180-240 px), so nothing is upscaled.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=8.0, short_side=256,
                            description="8 fps, short side <= 256."),
      bb.VideoBuilderConfig(name="fps16", fps=16.0, short_side=256,
                            description="16 fps (dense sampling), short side <= 256."),
  ]

  def _features(self):
    # label names are set from Diving48_vocab.json in _split_records
    return bb.classification_features(start_frame=np.int32, end_frame=np.int32)

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    vocab = lay.find(VOCAB, ANNOTATION_DIRS)
    if vocab is None:   # every split needs the class names
      return {split: rl.Missing((VOCAB,)) for split in SPLIT_FILES}
    names = read_vocab(pathlib.Path(vocab))
    self.set_label_names(names)
    return rl.per_split(SPLIT_FILES, lambda split: read_split(
        pathlib.Path(lay.require(SPLIT_FILES[split], ANNOTATION_DIRS)), lay, names))
