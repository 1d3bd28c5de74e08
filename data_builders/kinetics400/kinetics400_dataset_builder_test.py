"""kinetics400 builder on a tiny CVDF-layout copy: flat train/test, per-label val folders, a
replacement file, a duplicate csv row, one corrupt and one missing clip."""
from __future__ import annotations

import pathlib

import pytest

from data_builders.kinetics400 import kinetics400_dataset_builder as k400
from vlx.data import layout_testing, testing

HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"
# (label, youtube id, start, end)
TRAIN = [("abseiling", "--07WQ2iBlw", 1, 11), ("air drumming", "-0UIi2iKxV8", 30, 40),
         ("zumba", "0ZyOgt7rOKU", 2, 12), ("zumba", "1Aa8P4fXCzk", 100, 110)]
VAL = [("abseiling", "3bKdVhn0X3c", 0, 10), ("zumba", "5Kq7y2z0aMs", 15, 25),
       ("air drumming", "7nA5gEt3cFs", 4, 14)]
TEST = [("air drumming", "9Zr2lBfF1ok", 60, 70), ("abseiling", "A4vYzJ6xQ2g", 5, 15)]


def _csv(rows, split: str) -> str:
  return HEADER + "".join(f"{l},{y},{s},{e},{split},0\n" for l, y, s, e in rows)


def write_layout(root: pathlib.Path, *, annotations: str = "annotations", real: bool = True
                 ) -> None:
  """The CVDF k400/ folder (csvs in root/<annotations>); `real` = False: placeholders."""
  ann = root / annotations
  ann.mkdir(parents=True, exist_ok=True)
  (ann / "train.csv").write_text(_csv(TRAIN, "train"))
  (ann / "val.csv").write_text(_csv(VAL, "val"))
  (ann / "test.csv").write_text(_csv(TEST + TEST[:1], "test"))  # a duplicated row
  paths = {ytid: root / folder / (label.replace(" ", "_") if per_label else "")
           / (k400.clip_name(ytid, s, e) + ".mp4")
           for folder, rows, per_label in (("train", TRAIN, False), ("val", VAL, True),
                                           ("test", TEST, False))
           for label, ytid, s, e in rows}
  replacement = root / k400.REPLACEMENT_DIR / (k400.clip_name("0ZyOgt7rOKU", 2, 12) + ".mp4")
  if not real:
    layout_testing.touch([p for y, p in paths.items() if y != "7nA5gEt3cFs"] + [replacement])
    return
  testing.write_videos(paths, corrupt=("0ZyOgt7rOKU", "1Aa8P4fXCzk"), missing="7nA5gEt3cFs",
                       first_seed=1, fps=4)
  # the mirror's replacement for one of the corrupt train clips
  testing.write_video(replacement, num_frames=4, height=32, width=40, fps=4, seed=99)


class Kinetics400Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = k400.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 3, "missing": 0, "corrupt": 1},
                      "validation": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0},
                      "test": {"annotated": 2, "found": 2, "missing": 0, "corrupt": 0}}

  EXPECTED_LABEL_NAMES = ["abseiling", "air drumming", "zumba"]
  make_dummy_data = staticmethod(write_layout)

  def check_examples(self, config_name, split, examples):
    if split == "train":
      self.assertEqual(testing.label_rows(examples), [
          ("--07WQ2iBlw_000001_000011", 0, "abseiling"),
          ("-0UIi2iKxV8_000030_000040", 1, "air drumming"),
          ("0ZyOgt7rOKU_000002_000012", 2, "zumba")])  # from the replacement


def test_missing_time_field_names_file_line_field(tmp_path):
  path = tmp_path / "val.csv"
  path.write_text(HEADER + "abseiling,3bKdVhn0X3c,0,10,val,0\nzumba,5Kq7y2z0aMs,,25,val,0\n")
  with testing.raises_annotation_error(path, 3, "time_start"):
    k400.records(path, ["abseiling", "zumba"], k400.layout(tmp_path), tmp_path)


def test_unknown_label_is_an_annotation_error(tmp_path):
  path = tmp_path / "test.csv"
  path.write_text(HEADER + "juggling fire,3bKdVhn0X3c,0,10,test,0\n")
  with testing.raises_annotation_error(path, 2, "label"):
    k400.records(path, ["abseiling", "zumba"], k400.layout(tmp_path), tmp_path)


@pytest.mark.parametrize("annotations,nested", [("annotations", ""), ("", ""),
                                                ("annotations", "k400"),
                                                ("annotations", "kinetics/k400")])
def test_release_layouts(tmp_path, annotations, nested):
  """The mirror's k400/ as manual_dir, or its parent; csvs in annotations/ or beside the
  videos. The replacement clip wins over the original."""
  write_layout(tmp_path, annotations=annotations, real=False)
  if nested:
    layout_testing.nest(tmp_path, nested)
  recs = layout_testing.split_records(k400.Builder, "default", tmp_path)
  assert layout_testing.summary(k400.Builder, "default", tmp_path) == {
      "train": (4, 4), "validation": (3, 2), "test": (2, 2)}
  zumba = next(r for r in recs["train"] if r.key.startswith("0ZyOgt7rOKU"))
  assert zumba.video_path.endswith(k400.REPLACEMENT_DIR + "/0ZyOgt7rOKU_000002_000012.mp4")
