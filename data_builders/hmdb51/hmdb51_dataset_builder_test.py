"""hmdb51 builder on a tiny official-layout copy: 3 classes, one corrupt and one missing clip."""
from __future__ import annotations

import functools
import pathlib

from data_builders.hmdb51 import hmdb51_dataset_builder as hmdb
from vlx.data import testing

CLASSES = ["brush_hair", "fall_floor", "ride_bike"]  # underscores as in the release


def _clip(cls: str, i: int) -> str:
  return f"April_09_{cls}_u_nm_np1_ba_goo_{i}.avi"


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "") -> None:
  """Split files (split k: clip i is train when (i + k) % 4 < 2, test when 2, unused when 3)."""
  splits = root / hmdb.SPLIT_DIR
  splits.mkdir(parents=True)
  marks = {0: 1, 1: 1, 2: 2, 3: 0}
  for c in CLASSES:
    for k in (1, 2, 3):
      (splits / f"{c}_test_split{k}.txt").write_text(
          "".join(f"{_clip(c, i)} {marks[(i + k) % 4]} \n" for i in range(4)))
  testing.write_videos({_clip(c, i): root / hmdb.VIDEO_DIR / c / _clip(c, i)
                        for c in CLASSES for i in range(4)},
                       corrupt=corrupt, missing=missing, first_seed=1)


class Hmdb51Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = hmdb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["split1"]
  # split 1: clips 0, 3 train (marks of (i+1)%4 = 1, 0 -> 1), clip 1 test, clip 2 unused
  SPLITS = {"train": 5, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 6, "found": 5, "missing": 0, "corrupt": 1},
                      "test": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0}}
  EXPECTED_LABEL_NAMES = CLASSES
  make_dummy_data = staticmethod(functools.partial(
      write_layout, corrupt=_clip("ride_bike", 0), missing=_clip("fall_floor", 1)))

  def check_examples(self, config_name, split, examples):
    if split == "test":
      self.assertEqual(testing.label_rows(examples), [
          (_clip("brush_hair", 1)[:-4], 0, "brush_hair"),
          (_clip("ride_bike", 1)[:-4], 2, "ride_bike")])


def test_split_assignment_all_configs(tmp_path):
  write_layout(tmp_path)
  for k, train_ids, test_ids in ((1, {0, 3}, {1}), (2, {2, 3}, {0}), (3, {1, 2}, {3})):
    classes, recs = hmdb.records(tmp_path, k)
    assert classes == CLASSES
    assert {r.key for r in recs["train"]} == {_clip(c, i)[:-4] for c in CLASSES for i in train_ids}
    assert {r.key for r in recs["test"]} == {_clip(c, i)[:-4] for c in CLASSES for i in test_ids}


def test_bad_mark_names_file_line_field(tmp_path):
  write_layout(tmp_path)
  path = tmp_path / hmdb.SPLIT_DIR / "fall_floor_test_split2.txt"
  lines = path.read_text().splitlines()
  lines[2] = _clip("fall_floor", 2)  # the mark column is missing on line 3
  path.write_text("\n".join(lines) + "\n")
  with testing.raises_annotation_error(path, 3, "mark"):
    hmdb.records(tmp_path, 2)
