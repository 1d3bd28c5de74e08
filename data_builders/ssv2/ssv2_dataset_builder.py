"""ssv2: Something-Something V2 (174 template classes) read from the official label files.

something-something-v2-labels.json maps each template ("Putting something on a surface") to its
index; -train.json / -validation.json list {id, label, template, placeholders}, where the template
keeps brackets ("Putting [something] on a surface") and is matched to labels.json with the brackets
removed, as the reference loaders do. Besides `label`, each example keeps the filled-in sentence
(`captions`, e.g. "putting a pen on a table") and the `template`, for SSv2-label / -template
retrieval. The optional `test` split needs -test.json plus the later-released test-answers.csv.
"""
from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

VIDEO_DIRS = ("20bn-something-something-v2", "videos", ".")
ANNOTATION_DIRS = ("", "labels", "annotations")   # "" = manual_dir itself
VIDEO_EXT = ".webm"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Something-Something V2 from Qualcomm
(https://www.qualcomm.com/developer/software/something-something-v-2-dataset): the video parts
20bn-something-something-v2-00 .. -19 and the labels archive. Extract so that manual_dir holds:
  manual_dir/
    something-something-v2-labels.json  something-something-v2-train.json
    something-something-v2-validation.json  [something-something-v2-test.json  test-answers.csv]
    20bn-something-something-v2/1.webm 2.webm ...
(`cat 20bn-something-something-v2-?? | tar zx -C manual_dir`). The label files may also sit in
manual_dir/labels/ and be named labels.json, train.json, validation.json, test.json (newer
packages). The test split is built only when test.json and test-answers.csv are both present.
Files are found by name anywhere under manual_dir (5 folder levels: the videos unpacked without
20bn-something-something-v2/, everything in a folder of its own, ...).
"""


def normalise_template(template: str) -> str:
  """'Putting [something] on a surface' -> 'Putting something on a surface' (labels.json key)."""
  return template.replace("[", "").replace("]", "")


def layout(root) -> bb.Layout:
  return bb.Layout(root, "ssv2", video_dirs=VIDEO_DIRS)


def find_annotation(lay: bb.Layout, kind: str) -> pathlib.Path | None:
  """something-something-v2-<kind>.json (or <kind>.json) anywhere under manual_dir, the
  top, labels/ and annotations/ first."""
  names = ("test-answers.csv",) if kind == "answers" else (
      f"something-something-v2-{kind}.json", f"{kind}.json")
  found = lay.find(names, ANNOTATION_DIRS)
  return pathlib.Path(found) if found else None


def read_labels(path: pathlib.Path) -> list[str]:
  """labels.json {template: "index"} -> templates in index order (indices must be 0..N-1)."""
  labels = bb.read_json(path)
  if not isinstance(labels, dict) or not labels:
    raise bb.AnnotationError(str(path), None, "<root>", 'an object {"<template>": "<index>"}')
  by_index: dict[int, str] = {}
  for name, index in labels.items():
    try:
      by_index[int(index)] = name
    except (TypeError, ValueError):
      raise bb.AnnotationError(str(path), None, name, "an integer index") from None
  if sorted(by_index) != list(range(len(labels))):
    raise bb.AnnotationError(str(path), None, "<indices>", f"0..{len(labels) - 1}, each once")
  return [by_index[i] for i in range(len(labels))]


def _video(lay: bb.Layout, vid: str) -> str:
  return lay.video(vid, os.path.join(lay.root, VIDEO_DIRS[0], f"{vid}{VIDEO_EXT}"))


def records(path: pathlib.Path, root: bb.Layout, classes: list[str]) -> list[bb.VideoRecord]:
  """-train.json / -validation.json -> VideoRecords labelled by the normalised template."""
  entries = bb.read_json(path)
  if not isinstance(entries, list):
    raise bb.AnnotationError(str(path), None, "<root>", "a list of {id, label, template, "
                             "placeholders} objects")
  index = {name: i for i, name in enumerate(classes)}
  out = []
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict):
      raise bb.AnnotationError(str(path), None, f"[{i}]", "an object")
    for field in ("id", "label", "template"):
      bb.entry_field(entry, i, field, file=path)
    name = normalise_template(str(entry["template"]))
    if name not in index:
      raise bb.AnnotationError(str(path), None, f"[{i}].template",
                               f"one of the {len(classes)} templates of labels.json "
                               f"(brackets removed), got {name!r}")
    placeholders = entry.get("placeholders") or []
    vid = str(entry["id"])
    out.append(bb.VideoRecord(
        key=vid, video_path=_video(root, vid),
        fields=dict(label=index[name], label_name=name, template=str(entry["template"]),
                    captions=[str(entry["label"])], placeholders=[str(p) for p in placeholders])))
  return out


def answer_records(test_json: pathlib.Path, answers: pathlib.Path, root: bb.Layout,
                 classes: list[str]) -> list[bb.VideoRecord]:
  """test.json ids labelled by test-answers.csv ("<id>;<template>" per line)."""
  entries = bb.read_json(test_json)
  ids = []
  for i, entry in enumerate(entries if isinstance(entries, list) else []):
    ids.append(str(bb.entry_field(entry, i, "id", file=test_json)))
  index = {name: i for i, name in enumerate(classes)}
  answer = {}
  for line, row in bb.read_csv(answers, ("id", "label"), delimiter=";",
                               fieldnames=("id", "label")):
    if row["label"] not in index:
      raise bb.AnnotationError(str(answers), line, "label",
                               f"one of the {len(classes)} templates of labels.json")
    answer[row["id"]] = row["label"]
  out = []
  for vid in ids:
    if vid not in answer:
      raise bb.AnnotationError(str(answers), None, vid, "an answer for every id of test.json")
    name = answer[vid]
    out.append(bb.VideoRecord(
        key=vid, video_path=_video(root, vid),
        fields=dict(label=index[name], label_name=name, template=name, captions=[name],
                    placeholders=[])))
  return out


class Builder(bb.VideoDatasetBuilder):
  """Something-Something V2 from the official webm videos and label files (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://www.qualcomm.com/developer/software/something-something-v-2-dataset"
  # Clips are 2-6 s at 12 fps and the classes are about motion: 6 fps keeps ~24 frames; the
  # videos are 240 px high, so short side 256 keeps them as released.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=6.0, short_side=256,
                            description="6 fps, short side <= 256 (native 240 px)."),
      bb.VideoBuilderConfig(name="all_frames", fps=0.0, short_side=256,
                            description="Every frame (12 fps), short side <= 256."),
  ]

  def _features(self):
    # label names are set from labels.json in _split_records
    return bb.classification_features(template=tfds.features.Text(),
                                      **bb.caption_features(placeholders=bb.texts()))

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    files = {kind: find_annotation(lay, kind)
             for kind in ("labels", "train", "validation", "test", "answers")}
    if files["labels"] is None:   # every split needs the class list
      return {split: rl.Missing(("something-something-v2-labels.json",))
              for split in ("train", "validation")}
    classes = read_labels(files["labels"])
    self.set_label_names(classes)
    recs: dict[str, object] = {
        split: records(files[split], lay, classes) if files[split] is not None
        else rl.Missing((f"something-something-v2-{split}.json",))
        for split in ("train", "validation")}
    if files["test"] is not None and files["answers"] is not None:
      recs["test"] = answer_records(files["test"], files["answers"], lay, classes)
    return recs
