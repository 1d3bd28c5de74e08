"""howto100m builder: one example per caption segment (or per whole video), from a partial
subset of the videos."""
import json
import pathlib

import numpy as np
import pytest

from data_builders.howto100m import howto100m_dataset_builder as ht
from vlx.data import builder_base as bb
from vlx.data import layout_testing, media, testing

CSV = """video_id,category_1,category_2,rank,task_id
vidA,Food and Entertaining,Recipes,1,52907
vidB,Hobbies and Crafts,Crafts,3,109972
vidC,Food and Entertaining,Recipes,2,52907
vidD,Home and Garden,Gardening,7,77721
vidE,Home and Garden,Gardening,8,77721
"""
CAPTIONS = {
    "vidA": {"start": [0.0, 0.5, 1.5], "end": [0.5, 1.0, 3.0], "text": ["chop onion", "add salt",
                                                                     "stir it"]},
    "vidB": {"start": [0.25, 5.0, 1.0], "end": [1.25, 6.0, 1.0],  # 2nd: past the end; 3rd: empty
             "text": ["fold paper", "beyond the end", "zero length"]},
    "vidC": {"start": [0, 1], "end": [1, 2], "text": ["corrupt a", "corrupt b"]},
    "vidD": {"start": [0], "end": [1], "text": ["not downloaded"]},
}


class HowTo100MTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = ht.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 4}
  EXPECTED_REPORTS = {"train": dict(annotated=4, found=2, missing=1, corrupt=1, records=8,
                                    examples=4, failed_clips=1)}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    (root / "HowTo100M_v1.csv").write_text(CSV)
    (root / "caption.json").write_text(json.dumps(CAPTIONS))
    testing.write_video(root / "videos/vidA.mp4", num_frames=8, height=32, width=48, fps=4)
    testing.write_video(root / "videos/part2/vidB.webm", num_frames=8, height=32, width=48, fps=4,
                        seed=1)
    testing.write_corrupt(root / "videos/vidC.mp4")

  def check_examples(self, config_name, split, examples):
    got = {(e["video_id"].decode(), e["captions"][0].decode()): (float(e["start"]),
           float(e["end"]), len(e["video"])) for e in examples}
    # 2 fps inside [start, end): frames at start, start + 0.5, ... before the end of the video.
    self.assertEqual(got, {("vidA", "chop onion"): (0.0, 0.5, 1),
                           ("vidA", "add salt"): (0.5, 1.0, 1),
                           ("vidA", "stir it"): (1.5, 3.0, 1),
                           ("vidB", "fold paper"): (0.25, 1.25, 2)})
    self.assertEqual({e["category_2"].decode() for e in examples}, {"Recipes", "Crafts"})


def test_max_segments_and_bad_captions(tmp_path):
  (tmp_path / "HowTo100M_v1.csv").write_text("video_id\nv\n")
  testing.write_video(tmp_path / "videos/v.mp4", num_frames=2, height=16, width=16, fps=2)
  n = 20
  entry = dict(start=list(range(n)), end=list(range(1, n + 1)), text=[f"t{i}" for i in range(n)])
  (tmp_path / "caption.json").write_text(json.dumps({"v": entry}))
  builder = ht.Builder(config="max8", data_dir=str(tmp_path / "data"))
  recs = list(builder._records(str(tmp_path)))  # pylint: disable=protected-access
  assert [r.fields["captions"][0] for r in recs] == ["t0", "t3", "t5", "t8", "t11", "t14", "t16",
                                                     "t19"]
  (tmp_path / "caption.json").write_text(json.dumps({"v": {"start": [0, 1], "end": [1],
                                                           "text": ["a", "b"]}}))
  with testing.raises_annotation_error(tmp_path / "caption.json", None, "v.text",
                                       "start, end and text of equal length"):
    list(builder._records(str(tmp_path)))  # pylint: disable=protected-access


@pytest.mark.parametrize("annotations,videos,nested", [
    ("", "videos", ""), ("HowTo100M", "videos", ""), ("HowTo100M", "howto_videos/part1", ""),
    ("", "", "howto100m")])
def test_release_layouts(tmp_path, annotations, videos, nested):
  """HowTo100M.zip unpacked with or without its folder; videos in videos/, elsewhere or at the
  top; everything in a folder of its own."""
  (tmp_path / annotations).mkdir(parents=True, exist_ok=True)
  (tmp_path / annotations / "HowTo100M_v1.csv").write_text(CSV)
  (tmp_path / annotations / "caption.json").write_text(json.dumps(CAPTIONS))
  layout_testing.touch([tmp_path / videos / "vidA.mp4", tmp_path / videos / "sub" / "vidB.webm",
                        tmp_path / videos / "vidC.MP4"])
  if nested:
    layout_testing.nest(tmp_path, nested)
  # vidA: 3 segments, vidB: 2 (one zero-length dropped), vidC: 2, vidD: one "missing" record
  assert layout_testing.summary(ht.Builder, "default", tmp_path) == {"train": (8, 7)}
  (tmp_path / (nested or ".") / annotations / "caption.json").unlink()
  assert layout_testing.summary(ht.Builder, "default", tmp_path) == {
      "train": "missing: caption.json"}


def test_whole_videos(tmp_path):
  """`whole_videos`: one example per video on disk with all its frames at 2 fps (uncut) and all
  its segment texts; missing / corrupt videos counted as in the segment configs; a listed video
  without narration is kept (captions [])."""
  manual = tmp_path / "manual"
  manual.mkdir()
  HowTo100MTest.make_dummy_data(manual)     # vidA, vidB on disk, vidC corrupt, vidD missing
  testing.write_video(manual / "videos/vidE.mkv", num_frames=6, height=32, width=48, fps=4,
                      seed=2)               # in the csv, not in caption.json
  with testing.environ(**{bb.WORKERS_ENV: "1", bb.CACHE_ENV: None}):
    builder = testing.build(ht.Builder, "whole_videos", manual, tmp_path / "data")
  assert testing.report_counts("howto100m", "train", "whole_videos") == {
      "annotated": 5, "found": 3, "missing": 1, "corrupt": 1}
  report = bb.last_report("howto100m", "train")
  assert (report["records"], report["examples"], report["failed_clips"]) == (5, 3, 0)
  assert report["missing_videos"] == ["vidD.mp4"]
  assert report["corrupt_videos"] == ["vidC.mp4"]
  got = testing.examples_by_id(builder, "train")
  assert sorted(got) == ["vidA", "vidB", "vidE"]
  assert {v: testing.decoded(e["captions"]) for v, e in got.items()} == {
      "vidA": ["chop onion", "add salt", "stir it"],
      "vidB": ["fold paper", "beyond the end"],   # the zero-length segment is dropped
      "vidE": []}
  paths = {"vidA": "vidA.mp4", "vidB": "part2/vidB.webm", "vidE": "vidE.mkv"}
  for vid, ex in got.items():
    # the whole video (2 s / 1.5 s at 2 fps: 4 / 3 frames), short side 32 < 160 kept
    want, _ = media.decode_video(manual / "videos" / paths[vid], fps=2.0, short_side=160)
    assert len(want) == {"vidE": 3}.get(vid, 4), vid
    assert ex["video"].shape == want.shape, vid
    assert np.abs(ex["video"].astype(int) - want).mean() < 3, vid   # JPEG q90
    assert (float(ex["start"]), float(ex["end"])) == (-1.0, -1.0)
  assert got["vidB"]["category_2"].decode() == "Crafts"
  s = bb.decode_settings(builder.builder_config, cache="")
  assert (s.fps, s.short_side, s.max_frames) == (2.0, 160, ht.WHOLE_VIDEO_MAX_FRAMES)
