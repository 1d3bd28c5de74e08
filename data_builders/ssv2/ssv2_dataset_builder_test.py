"""ssv2 builder on a tiny official-layout copy: 3 templates, webm clips, one corrupt and one
missing video, and the optional test split from test-answers.csv."""
from __future__ import annotations

import json
import pathlib
import tempfile

import pytest
import tensorflow_datasets as tfds

from data_builders.ssv2 import ssv2_dataset_builder as ssv2
from vlx.data import builder_base, testing

LABELS = {"Approaching something with your camera": "0",
          "Putting something on a surface": "2",
          "Pushing something from left to right": "1"}


def _entry(vid: str, template: str, *objects: str) -> dict:
  sentence = template
  for o in objects:
    sentence = sentence.replace("[something]", o, 1)
  return dict(id=vid, label=sentence[0].lower() + sentence[1:], template=template,
              placeholders=list(objects))


TRAIN = [_entry("78687", "Putting [something] on a surface", "a pen"),
         _entry("42326", "Approaching [something] with your camera", "a cup"),
         _entry("100904", "Pushing [something] from left to right", "a box"),
         _entry("3694", "Putting [something] on a surface", "potato")]
VALIDATION = [_entry("74225", "Pushing [something] from left to right", "a phone"),
              _entry("116154", "Approaching [something] with your camera", "keys"),
              _entry("198186", "Putting [something] on a surface", "a mug")]
TEST = ["1420", "7791"]
ANSWERS = "1420;Putting something on a surface\n7791;Approaching something with your camera\n"


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "") -> None:
  files = dict(labels=LABELS, train=TRAIN, validation=VALIDATION, test=[{"id": v} for v in TEST])
  for kind, content in files.items():
    (root / f"something-something-v2-{kind}.json").write_text(json.dumps(content, indent=1))
  (root / "test-answers.csv").write_text(ANSWERS)
  ids = [e["id"] for e in TRAIN + VALIDATION] + TEST
  for seed, vid in enumerate(ids):
    path = root / ssv2.VIDEO_DIRS[0] / f"{vid}.webm"
    if vid == missing:
      continue
    if vid == corrupt:
      testing.write_corrupt(path)
    else:
      testing.write_video(path, num_frames=4, height=32, width=40, fps=6, seed=seed)


class Ssv2Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = ssv2.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 3, "missing": 0, "corrupt": 1},
                      "validation": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0},
                      "test": {"annotated": 2, "found": 2, "missing": 0, "corrupt": 0}}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    write_layout(root, corrupt="100904", missing="116154")

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    self.assertEqual(builder.info.features["label"].names,
                     ["Approaching something with your camera",
                      "Pushing something from left to right", "Putting something on a surface"])
    got = {ex["video_id"].decode(): (int(ex["label"]), [c.decode() for c in ex["captions"]],
                                     [p.decode() for p in ex["placeholders"]])
           for ex in tfds.as_numpy(builder.as_dataset(split="validation"))}
    self.assertEqual(got, {"74225": (1, ["pushing a phone from left to right"], ["a phone"]),
                           "198186": (2, ["putting a mug on a surface"], ["a mug"])})
    test = {ex["video_id"].decode(): int(ex["label"])
            for ex in tfds.as_numpy(builder.as_dataset(split="test"))}
    self.assertEqual(test, {"1420": 2, "7791": 0})


def test_missing_template_names_file_and_entry():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    path = root / "something-something-v2-train.json"
    entries = [dict(e) for e in TRAIN]
    del entries[2]["template"]
    path.write_text(json.dumps(entries))
    with pytest.raises(builder_base.AnnotationError,
                       match=r"something-something-v2-train\.json: field '\[2\]\.template'"):
      ssv2.records(path, root, list(LABELS))


def test_unknown_template_is_an_annotation_error():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    path = root / "validation.json"
    path.write_text(json.dumps([_entry("5", "Tearing [something] into two pieces", "paper")]))
    with pytest.raises(builder_base.AnnotationError, match=r"field '\[0\]\.template'"):
      ssv2.records(path, root, list(LABELS))


def test_newer_package_names_are_found():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    (root / "labels").mkdir()
    (root / "labels" / "labels.json").write_text(json.dumps(LABELS))
    assert ssv2.find_annotation(root, "labels") == root / "labels" / "labels.json"
    assert ssv2.read_labels(root / "labels" / "labels.json")[1] == (
        "Pushing something from left to right")
