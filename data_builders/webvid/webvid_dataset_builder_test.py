"""webvid builder: official CSVs, page_dir / flat / video2dataset layouts, corrupt + missing."""
import json
import pathlib

import pytest

from data_builders.webvid import webvid_dataset_builder as wv
from vlx.data import layout_testing, testing

HEADER = "videoid,contentUrl,duration,page_dir,name\n"
TRAIN = [("1001", "000001_000050", "a man surfs a wave"),
         ("1002", "000001_000050", "city at night"),
         ("1003", "000051_000100", "bees on a flower"), ("1004", "000051_000100", "broken file"),
         ("1005", "000051_000100", "never downloaded"), ("1003", "000051_000100", "duplicate row")]
VAL = [("2001", "000101_000150", "snow falling"), ("2002", "000101_000150", "a red car, parked")]


def _csv(rows) -> str:
  return HEADER + "".join(f'{v},https://x/{v}.mp4,PT00H00M10S,{p},"{n}"\n' for v, p, n in rows)


class WebVidTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = wv.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["2M", "10M_lite"]
  SPLITS = {"train": 3, "val": 2}
  EXPECTED_REPORTS = {"train": dict(annotated=5, found=3, missing=1, corrupt=1, records=5),
                      "val": dict(annotated=2, found=2, missing=0, corrupt=0)}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    videos = root / "videos"
    for i, (vid, page, _) in enumerate(TRAIN[:3]):  # official layout, except one flat file
      path = videos / page / f"{vid}.mp4" if i < 2 else videos / f"{vid}.mp4"
      testing.write_video(path, num_frames=4, height=32, width=48, fps=4, seed=i)
    testing.write_corrupt(videos / TRAIN[3][1] / f"{TRAIN[3][0]}.mp4")
    for i, (vid, _, _) in enumerate(VAL):
      testing.write_video(videos / f"{vid}.mp4", num_frames=4, height=32, width=48, fps=4, seed=9)
    (root / "results_2M_train.csv").write_text(_csv(TRAIN))
    (root / "results_2M_val.csv").write_text(_csv(VAL))
    (root / "metadata").mkdir()
    (root / "metadata/results_10M_train.csv").write_text(_csv(TRAIN))
    (root / "metadata/results_10M_val.csv").write_text(_csv(VAL))

  def check_examples(self, config_name, split, examples):
    got = {e["video_id"].decode(): [c.decode() for c in e["captions"]] for e in examples}
    rows = TRAIN[:3] if split == "train" else VAL
    self.assertEqual(got, {v: [n] for v, _, n in rows})
    # 1-s clips (4 frames at 4 fps): 2 fps keeps 2 frames, the lite configs' 1 fps keeps 1.
    shapes = {e["video"].shape for e in examples}
    expected = (2, 32, 48, 3) if config_name == "2M" else (1, 32, 48, 3)
    self.assertEqual(shapes, {expected})


def test_video2dataset_layout(tmp_path):
  shard = tmp_path / "videos" / "00000"
  for i, vid in enumerate(["77", "78"]):
    testing.write_video(shard / f"00000000{i}.mp4", num_frames=2, height=16, width=16, fps=2)
    (shard / f"00000000{i}.json").write_text(json.dumps(dict(videoid=int(vid), caption="c")))
  rows = [dict(videoid="77", page_dir="p"), dict(videoid="78", page_dir="p"),
          dict(videoid="79", page_dir="p")]
  locate = wv.VideoLocator(str(tmp_path), rows)
  assert locate(rows[0]) == str(shard / "000000000.mp4")
  assert locate(rows[1]) == str(shard / "000000001.mp4")
  assert locate(rows[2]) == str(tmp_path / "videos" / "p" / "79.mp4")  # reported as missing


def test_rows_without_caption_are_dropped_and_bad_header_named(tmp_path):
  path = tmp_path / "results_2M_val.csv"
  path.write_text(HEADER + "1,u,PT1S,p,first\n2,u,PT1S,p,\n1,u,PT1S,p,again\n3,u,PT1S,,third\n")
  recs = list(wv.records(wv.read_rows(str(path)), lambda row: f"/v/{row['videoid']}.mp4"))
  assert [(r.key, r.fields["captions"]) for r in recs] == [("1", ["first"]), ("3", ["third"])]
  path.write_text("videoid,contentUrl,caption\n1,u,x\n")
  with testing.raises_annotation_error(path, 1, "name", "a column 'name' (the caption)"):
    list(wv.read_rows(str(path)))


@pytest.mark.parametrize("layout", ["official", "metadata", "flat", "elsewhere", "nested"])
def test_release_layouts(tmp_path, layout):
  """CSVs at the top or in metadata/; videos in videos/<page_dir>/, flat in videos/, under a
  folder of another name, or everything inside webvid/."""
  csvs = tmp_path / ("metadata" if layout == "metadata" else "")
  csvs.mkdir(exist_ok=True)
  (csvs / "results_2M_train.csv").write_text(_csv(TRAIN))
  folder = {"flat": lambda v, p: tmp_path / "videos" / f"{v}.mp4",
            "elsewhere": lambda v, p: tmp_path / "downloads" / "part0" / f"{v}.mp4"}.get(
                layout, lambda v, p: tmp_path / "videos" / p / f"{v}.mp4")
  layout_testing.touch(folder(v, p) for v, p, _ in TRAIN[:4])
  if layout == "nested":
    layout_testing.nest(tmp_path, "webvid")
  assert layout_testing.summary(wv.Builder, "2M", tmp_path) == {
      "train": (5, 4), "val": "missing: results_2M_val.csv"}
