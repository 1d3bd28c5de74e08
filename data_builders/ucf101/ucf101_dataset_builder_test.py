"""ucf101 builder on a tiny official-layout copy: 3 classes, one corrupt and one missing clip."""
from __future__ import annotations

import functools
import pathlib

import pytest

from data_builders.ucf101 import ucf101_dataset_builder as ucf
from vlx.data import layout_testing, testing

CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def _clip(cls: str, group: int, clip: int) -> str:
  # the release spells this class "HandStandPushups" in file names (folder "HandstandPushups")
  stem = "HandStandPushups" if cls == "HandstandPushups" else cls
  return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "",
                 videos: str = ucf.VIDEO_DIR, lists: str = ucf.LIST_DIR,
                 real: bool = True) -> None:
  """classInd + split lists (CRLF like the release) in root/<lists> and one tiny avi per listed
  clip in root/<videos>/<Class>/ (`real` = False: placeholders)."""
  lists = root / lists
  lists.mkdir(parents=True, exist_ok=True)
  (lists / "classInd.txt").write_text(
      "".join(f"{i} {c}\r\n" for i, c in enumerate(CLASSES, 1)))
  for k in (1, 2, 3):
    train, test = [], []
    for i, c in enumerate(CLASSES, 1):
      # groups 1-2 test / 3-4 train in split 1, rotated in the others
      for g in (1, 2, 3, 4):
        rel = _clip(c, g, 1)
        (test if (g + k - 2) % 4 < 2 else train).append(rel)
    (lists / f"trainlist0{k}.txt").write_text(
        "".join(f"{r} {CLASSES.index(r.split('/')[0]) + 1}\r\n" for r in train))
    (lists / f"testlist0{k}.txt").write_text("".join(f"{r}\r\n" for r in test))
  clips = [_clip(c, g, 1) for c in CLASSES for g in (1, 2, 3, 4)]
  paths = {rel: root / videos / rel for rel in clips}
  if real:
    testing.write_videos(paths, corrupt=corrupt, missing=missing, first_seed=1)
  else:
    layout_testing.touch(p for rel, p in paths.items() if rel != missing)


class Ucf101Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = ucf.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["split1"]
  # split1: groups 3, 4 train and 1, 2 test -> 6 each; one train clip corrupt, one test missing
  SPLITS = {"train": 5, "test": 5}
  EXPECTED_REPORTS = {"train": {"annotated": 6, "found": 5, "missing": 0, "corrupt": 1},
                      "test": {"annotated": 6, "found": 5, "missing": 1, "corrupt": 0}}

  EXPECTED_LABEL_NAMES = CLASSES
  make_dummy_data = staticmethod(functools.partial(
      write_layout, corrupt=_clip("YoYo", 3, 1), missing=_clip("ApplyEyeMakeup", 1, 1)))

  def check_examples(self, config_name, split, examples):
    if split == "test":
      got = set(testing.label_rows(examples))
      self.assertIn(("v_HandStandPushups_g02_c01", 1, "HandstandPushups"), got)
      self.assertIn(("v_YoYo_g01_c01", 2, "YoYo"), got)


def test_bad_train_label_names_file_line_field(tmp_path):
  write_layout(tmp_path)
  path = tmp_path / ucf.LIST_DIR / "trainlist01.txt"
  lines = path.read_text().splitlines()
  lines[1] = lines[1].rsplit(" ", 1)[0] + " 3"  # wrong 1-based label on line 2
  path.write_text("\n".join(lines) + "\n")
  with testing.raises_annotation_error(path, 2, "label"):
    classes = ucf.read_class_index(tmp_path / ucf.LIST_DIR / "classInd.txt")
    ucf.records(tmp_path, "train", 1, classes)


def test_missing_class_name_names_line(tmp_path):
  path = tmp_path / "classInd.txt"
  path.write_text("1 ApplyEyeMakeup\n2\n")
  with testing.raises_annotation_error(path, 2, "class name"):
    ucf.read_class_index(path)


@pytest.mark.parametrize("videos,lists,nested", [
    ("UCF-101", "ucfTrainTestlist", ""), ("", "ucfTrainTestlist", ""), ("UCF-101", "", ""),
    ("UCF-101", "ucfTrainTestlist", "UCF101"), ("UCF101/UCF-101", "splits/ucfTrainTestlist", "")])
def test_release_layouts(tmp_path, videos, lists, nested):
  write_layout(tmp_path, videos=videos, lists=lists, real=False,
               missing=_clip("ApplyEyeMakeup", 1, 1))
  if nested:
    layout_testing.nest(tmp_path, nested)
  n = len(CLASSES) * 2
  assert layout_testing.summary(ucf.Builder, "split1", tmp_path) == {"train": (n, n),
                                                                    "test": (n, n - 1)}
