"""ssv2 builder on a tiny official-layout copy: 3 templates, webm clips, one corrupt and one
missing video, and the optional test split from test-answers.csv."""
from __future__ import annotations

import functools
import json
import pathlib

import pytest

from data_builders.ssv2 import ssv2_dataset_builder as ssv2
from vlx.data import layout_testing, testing

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


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "",
                 videos: str = ssv2.VIDEO_DIRS[0], labels: str = "", newer_names: bool = False,
                 real: bool = True) -> None:
  """Label files in root/<labels> (named labels.json ... with `newer_names`), videos in
  root/<videos>; `real` = False writes placeholder videos."""
  files = dict(labels=LABELS, train=TRAIN, validation=VALIDATION, test=[{"id": v} for v in TEST])
  (root / labels).mkdir(parents=True, exist_ok=True)
  for kind, content in files.items():
    name = f"{kind}.json" if newer_names else f"something-something-v2-{kind}.json"
    (root / labels / name).write_text(json.dumps(content, indent=1))
  (root / labels / "test-answers.csv").write_text(ANSWERS)
  ids = [e["id"] for e in TRAIN + VALIDATION] + TEST
  paths = {vid: root / videos / f"{vid}.webm" for vid in ids}
  if real:
    testing.write_videos(paths, corrupt=corrupt, missing=missing, fps=6)
  else:
    layout_testing.touch(p for v, p in paths.items() if v != missing)


class Ssv2Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = ssv2.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 3, "missing": 0, "corrupt": 1},
                      "validation": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0},
                      "test": {"annotated": 2, "found": 2, "missing": 0, "corrupt": 0}}

  EXPECTED_LABEL_NAMES = ["Approaching something with your camera",
                          "Pushing something from left to right", "Putting something on a surface"]
  make_dummy_data = staticmethod(functools.partial(write_layout, corrupt="100904",
                                                   missing="116154"))

  def check_examples(self, config_name, split, examples):
    if split == "validation":
      got = {ex["video_id"].decode(): (int(ex["label"]), testing.decoded(ex["captions"]),
                                       testing.decoded(ex["placeholders"])) for ex in examples}
      self.assertEqual(got, {"74225": (1, ["pushing a phone from left to right"], ["a phone"]),
                             "198186": (2, ["putting a mug on a surface"], ["a mug"])})
    elif split == "test":
      self.assertEqual({ex["video_id"].decode(): int(ex["label"]) for ex in examples},
                       {"1420": 2, "7791": 0})


def test_missing_template_names_file_and_entry(tmp_path):
  path = tmp_path / "something-something-v2-train.json"
  entries = [dict(e) for e in TRAIN]
  del entries[2]["template"]
  path.write_text(json.dumps(entries))
  with testing.raises_annotation_error(path, None, "[2].template"):
    ssv2.records(path, ssv2.layout(tmp_path), list(LABELS))


def test_unknown_template_is_an_annotation_error(tmp_path):
  path = tmp_path / "validation.json"
  path.write_text(json.dumps([_entry("5", "Tearing [something] into two pieces", "paper")]))
  with testing.raises_annotation_error(path, None, "[0].template", "templates of labels.json"):
    ssv2.records(path, ssv2.layout(tmp_path), list(LABELS))


def test_newer_package_names_are_found(tmp_path):
  (tmp_path / "labels").mkdir()
  (tmp_path / "labels" / "labels.json").write_text(json.dumps(LABELS))
  assert ssv2.find_annotation(ssv2.layout(tmp_path), "labels") == (
      tmp_path / "labels" / "labels.json")
  assert ssv2.read_labels(tmp_path / "labels" / "labels.json")[1] == (
      "Pushing something from left to right")


@pytest.mark.parametrize("videos,labels,newer,nested", [
    ("20bn-something-something-v2", "", False, ""), ("", "", False, ""),
    ("20bn-something-something-v2", "labels", True, ""),
    ("20bn-something-something-v2", "labels", True, "ssv2"),
    ("videos", "annotations", False, "")])
def test_release_layouts(tmp_path, videos, labels, newer, nested):
  write_layout(tmp_path, videos=videos, labels=labels, newer_names=newer, real=False,
               missing=TEST[0])
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(ssv2.Builder, "default", tmp_path) == {
      "train": (len(TRAIN), len(TRAIN)), "validation": (len(VALIDATION), len(VALIDATION)),
      "test": (2, 1)}
