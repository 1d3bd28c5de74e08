"""youcook2 builder on a tiny official-layout copy: mp4/mkv/webm raw videos cut into caption
segments, one corrupt and one missing video, and a caption-less testing video that is ignored."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from data_builders.youcook2 import youcook2_dataset_builder as yc2
from vlx.data import layout_testing, testing

# id -> (subset, recipe_type, extension, [(start, end, sentence)])
VIDEOS = {
    "GLd3aX16zBg": ("training", "101", ".mp4", [(0, 2, "spread margarine on two slices of bread"),
                                                (2, 4, "place a slice of cheese on the bread")]),
    "0O4bxhpFX9o": ("training", "102", ".mkv", [(1, 3, "cut the tomato into slices")]),
    "xHr8X2Wpmno": ("training", "101", ".webm", [(0, 1, "boil water"), (1, 2, "add pasta")]),
    "sGzBQrg1adY": ("validation", "101", ".mp4", [(0, 1, "heat oil in a pan"),
                                                  (1, 4, "fry the onions until golden")]),
    "V53XmPeyjIU": ("validation", "102", ".mp4", [(0, 3, "mix flour and eggs")]),
    "Kx0YdKRcDd0": ("testing", "102", ".mp4", []),
}
CORRUPT, MISSING = "xHr8X2Wpmno", "V53XmPeyjIU"


def database(videos=VIDEOS) -> dict:
  db = {}
  for vid, (subset, recipe, _, segs) in videos.items():
    entry = dict(subset=subset, recipe_type=recipe, duration=4.0,
                 video_url=f"https://www.youtube.com/watch?v={vid}",
                 annotations=[dict(segment=[s, e], id=i, sentence=t)
                              for i, (s, e, t) in enumerate(segs)])
    if subset == "testing":
      del entry["annotations"]
    db[vid] = entry
  return {"database": db}


def write_layout(root: pathlib.Path, *, annotations: str = "annotations",
                 videos: str = yc2.VIDEO_DIR, per_recipe: bool = True, real: bool = True) -> None:
  """The json in root/<annotations>, videos in root/<videos>/<subset>/<recipe>/ (or flat in
  root/<videos> without `per_recipe`); `real` = False writes placeholders."""
  (root / annotations).mkdir(parents=True, exist_ok=True)
  (root / annotations / yc2.ANNOTATION_FILE).write_text(json.dumps(database()))
  paths = {vid: root / videos / (f"{subset}/{recipe}" if per_recipe else "") / f"{vid}{ext}"
           for vid, (subset, recipe, ext, _) in VIDEOS.items()}
  if not real:
    layout_testing.touch(p for v, p in paths.items() if v != MISSING)
    return
  testing.write_videos(paths, corrupt=CORRUPT, missing=MISSING, num_frames=16,
                       fps=4)  # 4 s at 4 fps


class Youcook2Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = yc2.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2}
  EXPECTED_REPORTS = {
      "train": {"annotated": 3, "found": 2, "missing": 0, "corrupt": 1, "records": 5,
                "examples": 3},
      "validation": {"annotated": 2, "found": 1, "missing": 1, "corrupt": 0, "records": 3,
                     "examples": 2}}

  make_dummy_data = staticmethod(write_layout)

  def check_examples(self, config_name, split, examples):
    if split != "train":
      return
    got = {ex["video_id"].decode() + "/" + str(ex["segment_id"]):
           (float(ex["start"]), float(ex["end"]), ex["captions"][0].decode(),
            ex["recipe_type"].decode(), len(ex["video"])) for ex in examples}
    # default config stores 1 frame per second of the segment
    self.assertEqual(got, {
        "GLd3aX16zBg/0": (0.0, 2.0, "spread margarine on two slices of bread", "101", 2),
        "GLd3aX16zBg/1": (2.0, 4.0, "place a slice of cheese on the bread", "101", 2),
        "0O4bxhpFX9o/0": (1.0, 3.0, "cut the tomato into slices", "102", 2)})


@pytest.mark.parametrize("field", ["sentence", "segment"])
def test_missing_segment_field_names_file_and_path(tmp_path, field):
  db = database()
  del db["database"]["sGzBQrg1adY"]["annotations"][1][field]
  path = tmp_path / yc2.ANNOTATION_FILE
  path.write_text(json.dumps(db))
  with testing.raises_annotation_error(path, None, f"database.sGzBQrg1adY.annotations[1].{field}"):
    yc2.records(path, tmp_path)


def test_reversed_segment_is_rejected(tmp_path):
  db = database()
  db["database"]["GLd3aX16zBg"]["annotations"][0]["segment"] = [5, 2]
  path = tmp_path / yc2.ANNOTATION_FILE
  path.write_text(json.dumps(db))
  with testing.raises_annotation_error(path, None, "database.GLd3aX16zBg.annotations[0].segment",
                                       "0 <= start <= end"):
    yc2.records(path, tmp_path)


def test_records_pick_existing_extension(tmp_path):
  write_layout(tmp_path)
  recs = yc2.records(tmp_path / "annotations" / yc2.ANNOTATION_FILE, tmp_path)
  paths = {r.key: pathlib.Path(r.video_path).name for r in recs["train"]}
  assert paths["0O4bxhpFX9o_000"] == "0O4bxhpFX9o.mkv"
  assert np.isclose(recs["validation"][1].end, 4.0)


@pytest.mark.parametrize("annotations,videos,per_recipe,nested", [
    ("annotations", "raw_videos", True, ""), ("", "raw_videos", True, ""),
    ("annotations", "raw_videos", True, "YouCookII"), ("annotations", "videos", False, ""),
    ("", "", True, "data/YouCookII")])
def test_release_layouts(tmp_path, annotations, videos, per_recipe, nested):
  write_layout(tmp_path, annotations=annotations, videos=videos, per_recipe=per_recipe,
               real=False)
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(yc2.Builder, "default", tmp_path) == {"train": (5, 5),
                                                                      "validation": (3, 2)}
