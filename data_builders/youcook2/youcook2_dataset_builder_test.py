"""youcook2 builder on a tiny official-layout copy: mp4/mkv/webm raw videos cut into caption
segments, one corrupt and one missing video, and a caption-less testing video that is ignored."""
from __future__ import annotations

import json
import pathlib
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders.youcook2 import youcook2_dataset_builder as yc2
from vlx.data import builder_base, testing

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


def write_layout(root: pathlib.Path) -> None:
  (root / "annotations").mkdir(parents=True)
  (root / "annotations" / yc2.ANNOTATION_FILE).write_text(json.dumps(database()))
  for seed, (vid, (subset, recipe, ext, _)) in enumerate(VIDEOS.items()):
    path = root / yc2.VIDEO_DIR / subset / recipe / f"{vid}{ext}"
    if vid == MISSING:
      continue
    if vid == CORRUPT:
      testing.write_corrupt(path)
    else:  # 4 s at 4 fps
      testing.write_video(path, num_frames=16, height=32, width=40, fps=4, seed=seed)


class Youcook2Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = yc2.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2}
  EXPECTED_REPORTS = {
      "train": {"annotated": 3, "found": 2, "missing": 0, "corrupt": 1, "records": 5,
                "examples": 3},
      "validation": {"annotated": 2, "found": 1, "missing": 1, "corrupt": 0, "records": 3,
                     "examples": 2}}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    write_layout(root)

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    got = {ex["video_id"].decode() + "/" + str(ex["segment_id"]):
           (float(ex["start"]), float(ex["end"]), ex["captions"][0].decode(),
            ex["recipe_type"].decode(), len(ex["video"]))
           for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
    # default config stores 1 frame per second of the segment
    self.assertEqual(got, {
        "GLd3aX16zBg/0": (0.0, 2.0, "spread margarine on two slices of bread", "101", 2),
        "GLd3aX16zBg/1": (2.0, 4.0, "place a slice of cheese on the bread", "101", 2),
        "0O4bxhpFX9o/0": (1.0, 3.0, "cut the tomato into slices", "102", 2)})


@pytest.mark.parametrize("field", ["sentence", "segment"])
def test_missing_segment_field_names_file_and_path(field):
  db = database()
  del db["database"]["sGzBQrg1adY"]["annotations"][1][field]
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / yc2.ANNOTATION_FILE
    path.write_text(json.dumps(db))
    with pytest.raises(builder_base.AnnotationError,
                       match=rf"{yc2.ANNOTATION_FILE}: field "
                             rf"'database\.sGzBQrg1adY\.annotations\[1\]\.{field}'"):
      yc2.records(path, pathlib.Path(tmp))


def test_reversed_segment_is_rejected():
  db = database()
  db["database"]["GLd3aX16zBg"]["annotations"][0]["segment"] = [5, 2]
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / yc2.ANNOTATION_FILE
    path.write_text(json.dumps(db))
    with pytest.raises(builder_base.AnnotationError, match=r"0 <= start <= end"):
      yc2.records(path, pathlib.Path(tmp))


def test_records_pick_existing_extension():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    write_layout(root)
    recs = yc2.records(root / "annotations" / yc2.ANNOTATION_FILE, root)
    paths = {r.key: pathlib.Path(r.video_path).name for r in recs["train"]}
    assert paths["0O4bxhpFX9o_000"] == "0O4bxhpFX9o.mkv"
    assert np.isclose(recs["validation"][1].end, 4.0)
