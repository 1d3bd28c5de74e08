"""didemo builder on dummy files in the official DiDeMo layout ({split}_data.json + videos/)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from data_builders.didemo import didemo_dataset_builder as didemo
from vlx.data import layout_testing, testing

A = "12090392@N02_13482799053_87ef417396.mov"   # AWS copy: videos/<video>.mp4
B = "54322086@N00_2376706574_29a2a6a92b.avi"    # Flickr original: videos/<video>
C = "corrupt@N00_1_x.mp4"
D = "missing@N00_2_y.mp4"


def _moment(video: str, text: str, times, i: int) -> dict:
  return {"annotation_id": i, "description": text, "video": video, "times": times,
          "dl_link": f"https://www.flickr.com/video_download.gne?id={i}", "num_segments": 6}


TRAIN = [
    _moment(A, "the dog jumps .", [[2, 2], [2, 3], [2, 2], [2, 2]], 0),
    _moment(B, "a girl waves at the camera", [[1, 1], [1, 1], [1, 2], [1, 1]], 1),
    _moment(A, "a man enters .", [[0, 0], [0, 0], [0, 1], [0, 0]], 2),
    _moment(C, "nothing to see", [[0, 5]] * 4, 3),
    _moment(A, "camera zooms out .", [[4, 5]] * 4, 4),
    _moment(D, "gone", [[3, 3]] * 4, 5),
]


def write_dummy(root: pathlib.Path) -> None:
  testing.write_video(root / "videos" / f"{A}.mp4", num_frames=4, height=32, width=32, fps=8)
  testing.write_video(root / "videos" / B, num_frames=4, height=32, width=32, fps=8, seed=1)
  testing.write_corrupt(root / "videos" / C)
  data = root / "data"   # one folder down, as LocalizingMoments keeps them
  data.mkdir()
  (data / "train_data.json").write_text(json.dumps(TRAIN))
  (data / "val_data.json").write_text(json.dumps([_moment(A, "a man enters .", [[0, 0]] * 4, 9)]))
  (data / "test_data.json").write_text(json.dumps([_moment(B, "a girl waves", [[1, 1]] * 4, 8)]))


class DidemoTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = didemo.Builder
  SPLITS = {"train": 2, "val": 1, "test": 1}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 2, "missing": 1, "corrupt": 1}}

  make_dummy_data = staticmethod(write_dummy)

  def check_examples(self, config_name, split, examples):
    if split != "train":
      return
    examples = testing.by_video_id(examples)
    self.assertEqual(sorted(examples), sorted([A, B]))
    a = examples[A]
    self.assertEqual(testing.decoded(a["captions"]),
                     ["a man enters . the dog jumps . camera zooms out ."])
    self.assertEqual(testing.decoded(a["segment_captions"]),
                     ["a man enters .", "the dog jumps .", "camera zooms out ."])
    np.testing.assert_allclose(a["segment_times"], [[0, 6.25], [10, 16.25], [20, 30]])
    self.assertEqual(a["video"].shape, (1, 32, 32, 3))   # 0.5 s at 2 fps
    np.testing.assert_allclose(examples[B]["segment_times"], [[5, 11.25]])


def test_paragraph_order_and_times(tmp_path):
  path = tmp_path / "train_data.json"
  path.write_text(json.dumps(TRAIN))
  out = didemo.read_split(str(path))
  assert list(out) == [A, B, C, D]
  assert out[B]["paragraph"] == "a girl waves at the camera"
  assert out[A]["segment_captions"][0] == "a man enters ."


def test_missing_field_names_file_entry_and_field(tmp_path):
  path = tmp_path / "val_data.json"
  broken = [dict(m) for m in TRAIN[:3]]
  del broken[2]["description"]
  path.write_text(json.dumps(broken))
  with testing.raises_annotation_error(path, None, "[2].description"):
    didemo.read_split(str(path))
  path.write_text(json.dumps([dict(TRAIN[0], times=[[3, 1]])]))
  with testing.raises_annotation_error(path, None, "[0].times", "0 <= first <= last"):
    didemo.read_split(str(path))


def test_video_lookup(tmp_path):
  (tmp_path / "videos").mkdir()
  for name in ("a.mov.mp4", "b.avi", "c.mp4", "e..mp4", "f.mp4"):
    (tmp_path / "videos" / name).write_bytes(b"x")
  lay = didemo.layout(tmp_path)
  assert didemo.video_path(lay, "a.mov").endswith("a.mov.mp4")
  assert didemo.video_path(lay, "b.avi").endswith("videos/b.avi")
  assert didemo.video_path(lay, "c.mov").endswith("videos/c.mp4")
  assert didemo.video_path(lay, "d.mov").endswith("videos/d.mov")
  # Some official names end in '.' (no extension): AWS saves them as '<name>.mp4'.
  assert didemo.video_path(lay, "e.").endswith("videos/e..mp4")
  assert didemo.video_path(lay, "f.").endswith("videos/f.mp4")


def write_release(root: pathlib.Path, layout: str) -> None:
  """documented (data/*.json, videos/); flat (json files and videos at the top); repo (the
  LocalizingMoments checkout with its data/ and the videos in didemo_videos/)."""
  data = {"documented": root / "data", "flat": root,
          "repo": root / "LocalizingMoments-master" / "data"}[layout]
  videos = {"documented": root / "videos", "flat": root, "repo": root / "didemo_videos"}[layout]
  data.mkdir(parents=True, exist_ok=True)
  (data / "train_data.json").write_text(json.dumps(TRAIN))
  (data / "val_data.json").write_text(json.dumps([_moment(A, "a man enters .", [[0, 0]] * 4, 9)]))
  layout_testing.touch([videos / f"{A}.mp4", videos / B, videos / C])


@pytest.mark.parametrize("layout,nested", [("documented", ""), ("flat", ""), ("repo", ""),
                                          ("documented", "DiDeMo")])
def test_release_layouts(tmp_path, layout, nested):
  write_release(tmp_path, layout)
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(didemo.Builder, None, tmp_path) == {
      "train": (4, 3), "val": (1, 1), "test": "missing: test_data.json"}
