"""hmdb51 builder on a tiny official-layout copy: 3 classes, one corrupt and one missing clip."""
from __future__ import annotations

import functools
import pathlib

import pytest

from data_builders.hmdb51 import hmdb51_dataset_builder as hmdb
from vlx.data import builder_base as bb
from vlx.data import layout_testing, release_layout as rl, testing

CLASSES = ["brush_hair", "fall_floor", "ride_bike"]  # underscores as in the release


def _clip(cls: str, i: int) -> str:
  return f"April_09_{cls}_u_nm_np1_ba_goo_{i}.avi"


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "",
                 layout: str = "documented", real: bool = True) -> None:
  """Split files (split k: clip i is train when (i + k) % 4 < 2, test when 2, unused when 3).
  layout: documented (hmdb51_org/<class>/, testTrainMulti_7030_splits/); classes_top (the
  per-class rars unpacked where they lie: <class>/ at the top); one_folder (every clip in
  hmdb51_org/); loose_splits (classes at the top and the split files too); `real` = False
  writes placeholder videos."""
  splits = root if layout == "loose_splits" else root / hmdb.SPLIT_DIR
  splits.mkdir(parents=True, exist_ok=True)
  marks = {0: 1, 1: 1, 2: 2, 3: 0}
  for c in CLASSES:
    for k in (1, 2, 3):
      (splits / f"{c}_test_split{k}.txt").write_text(
          "".join(f"{_clip(c, i)} {marks[(i + k) % 4]} \n" for i in range(4)))
  folder = {"documented": lambda c: root / hmdb.VIDEO_DIR / c,
            "one_folder": lambda c: root / hmdb.VIDEO_DIR}.get(layout, lambda c: root / c)
  paths = {_clip(c, i): folder(c) / _clip(c, i) for c in CLASSES for i in range(4)}
  if real:
    testing.write_videos(paths, corrupt=corrupt, missing=missing, first_seed=1)
  else:
    layout_testing.touch(p for name, p in paths.items() if name != missing)


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


@pytest.mark.parametrize("layout,nested", [
    ("documented", ""), ("classes_top", ""), ("one_folder", ""), ("loose_splits", ""),
    ("documented", "HMDB51"), ("classes_top", "data/hmdb")])
def test_release_layouts(tmp_path, layout, nested):
  write_layout(tmp_path, layout=layout, real=False, missing=_clip("fall_floor", 1))
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(hmdb.Builder, "split1", tmp_path) == {"train": (6, 6),
                                                                     "test": (3, 2)}


def test_class_folders_at_the_top_build(tmp_path):
  manual = tmp_path / "manual"
  write_layout(manual, layout="classes_top", corrupt=_clip("ride_bike", 0),
               missing=_clip("fall_floor", 1))
  builder = testing.build(hmdb.Builder, "split1", manual, tmp_path / "data")
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 5, "test": 2}
  assert testing.report_counts("hmdb51", "test", "split1") == {
      "annotated": 3, "found": 2, "missing": 1, "corrupt": 0}


def test_no_split_files_and_no_videos_are_one_line(tmp_path):
  layout_testing.touch([tmp_path / "brush_hair" / (_clip("brush_hair", 0))])
  with pytest.raises(bb.DatasetLayoutError, match=(
      r"^hmdb51/split1: no split can be built from .*: testTrainMulti_7030_splits/<class>_test_"
      r"split1.txt \(test_train_splits.rar\) not found")):
    rl.buildable(layout_testing.split_records(hmdb.Builder, "split1", tmp_path),
                 "hmdb51/split1", str(tmp_path))
  write_layout(tmp_path / "m", layout="classes_top", missing=[
      _clip(c, i) for c in CLASSES for i in range(4)])
  with pytest.raises(bb.DatasetLayoutError) as info:
    testing.build(hmdb.Builder, "split1", tmp_path / "m", tmp_path / "data")
  assert str(info.value) == (
      f"hmdb51/split1/train: none of the 6 annotated videos found under {tmp_path / 'm'} "
      "(searched 5 folder levels for <id>.mp4/.avi/.webm/.mkv/.mov/.m4v/.flv); e.g. tried "
      f"{tmp_path / 'm' / 'hmdb51_org' / 'brush_hair' / _clip('brush_hair', 0)}")


def test_two_split_folders_are_ambiguous(tmp_path):
  write_layout(tmp_path, layout="classes_top", real=False)
  (tmp_path / "copy").mkdir()
  for f in (tmp_path / hmdb.SPLIT_DIR).iterdir():
    (tmp_path / "copy" / f.name).write_text(f.read_text())
  (tmp_path / hmdb.SPLIT_DIR).rename(tmp_path / "old")
  with pytest.raises(bb.DatasetLayoutError, match=r"two candidates for brush_hair_test_split1"
                     r".txt under .*: copy/brush_hair_test_split1.txt and old/brush_hair_test_"
                     r"split1.txt"):
    layout_testing.summary(hmdb.Builder, "split1", tmp_path)
