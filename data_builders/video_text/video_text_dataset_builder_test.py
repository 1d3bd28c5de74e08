"""video_text builder: captions and labels configs from one CSV (with a corrupt and a missing
video), JSONL and per-split files, and errors that name the file, line and field."""
import pathlib

import pytest

from data_builders.video_text import video_text_dataset_builder as vt
from vlx.data import builder_base as bb
from vlx.data import layout_testing, testing

CSV = """video,caption,label,split,start,end
clips/cat.mp4,a cat jumps,cat,train,,
clips/cat.mp4,"a kitten leaps, twice",cat,train,,
dog.webm,a dog runs,dog,train,0.25,0.75
broken.mp4,never decodes,dog,train,,
gone.mp4,never downloaded,cat,train,,
bird.gif,a bird flies,bird,val,,
/ABS/still.jpg,a photo,cat,val,,
"""


class VideoTextTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = vt.Builder
  SPLITS = {"train": 2, "val": 2}
  EXPECTED_REPORTS = {"train": dict(annotated=4, found=2, missing=1, corrupt=1),
                      "val": dict(annotated=2, found=2, missing=0, corrupt=0)}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    testing.write_video(root / "clips/cat.mp4", num_frames=4, height=32, width=48, fps=4)
    testing.write_video(root / "dog.webm", num_frames=4, height=32, width=48, fps=4, seed=1)
    testing.write_video(root / "bird.gif", num_frames=4, height=32, width=48, fps=10, seed=2)
    testing.write_image(root / "abs/still.jpg", height=32, width=48)
    testing.write_corrupt(root / "broken.mp4")
    (root / "video_text.csv").write_text(CSV.replace("/ABS", str(root / "abs")))


def test_captions_grouped_and_cut(tmp_path):
  (tmp_path / "video_text.jsonl").write_text(
      '{"video": "a.mp4", "caption": ["one", "two"]}\n{"video": "a.mp4", "text": "three"}\n'
      '{"video": "b.mp4", "caption": "x", "split": "test", "start": 1, "end": 2.5}\n')
  data = vt.load(str(tmp_path), vt.VideoTextConfig(name="c", task="captions"))
  assert data["train"][("a.mp4", None, None)]["texts"] == ["one", "two", "three"]
  clip = data["test"][("b.mp4", 1.0, 2.5)]
  assert clip["video_path"] == str(tmp_path / "b.mp4") and clip["texts"] == ["x"]


def test_missing_column_names_file_line_field(tmp_path):
  csv = tmp_path / "video_text.csv"
  csv.write_text("video,label\na.mp4,cat\n")
  with testing.raises_annotation_error(
      csv, 1, "caption", "a column named 'caption' (or captions, text, sentence) in the header "
      "(found: video, label)"):
    vt.load(str(tmp_path), vt.VideoTextConfig(name="c", task="captions"))
  csv.write_text("video,label\na.mp4,cat\nb.mp4,\n")
  with testing.raises_annotation_error(csv, 3, "label", "a non-empty label"):
    vt.load(str(tmp_path), vt.VideoTextConfig(name="l", task="labels"))
  csv.write_text("video,label\na.mp4,cat\na.mp4,dog\n")
  with testing.raises_annotation_error(csv, 3, "label", "the same label as line 2 ('cat')"):
    vt.load(str(tmp_path), vt.VideoTextConfig(name="l", task="labels"))


def test_per_split_files_and_env_override(tmp_path):
  (tmp_path / "video_text_train.tsv").write_text("path\ttext\na.mp4\thello\n")
  (tmp_path / "video_text_val.csv").write_text("video,caption\nb.mp4,bye\n")
  data = vt.load(str(tmp_path), vt.VideoTextConfig(name="c", task="captions"))
  assert sorted(data) == ["train", "val"]
  assert data["train"][("a.mp4", None, None)]["texts"] == ["hello"]
  (tmp_path / "mine.csv").write_text("video,caption,split\nc.mp4,hi,test\n")
  with testing.environ(VLX_VIDEO_TEXT_FILE=str(tmp_path / "mine.csv")):
    assert sorted(vt.load(str(tmp_path), vt.VideoTextConfig(name="c"))) == ["test"]
  with pytest.raises(FileNotFoundError, match="expected video_text.csv"):
    vt.load(str(tmp_path / "empty"), vt.VideoTextConfig(name="c"))


def test_annotation_file_in_a_folder_of_its_own(tmp_path):
  """The folder copied into the manual dir as a whole: video_text.csv one level down, paths
  relative to it; a video that is nowhere is reported relative to the manual dir."""
  (tmp_path / "mydata").mkdir()
  (tmp_path / "mydata" / "video_text.csv").write_text(
      "video,caption,split\nclips/a.mp4,one,train\nclips/b.mp4,two,train\ngone.mp4,x,val\n")
  layout_testing.touch([tmp_path / "mydata" / "clips" / "a.mp4", tmp_path / "clips" / "b.mp4"])
  recs = layout_testing.split_records(vt.Builder, "captions", tmp_path)
  assert sorted(r.video_path for r in recs["train"]) == [
      str(tmp_path / "clips" / "b.mp4"), str(tmp_path / "mydata" / "clips" / "a.mp4")]
  assert [r.video_path for r in recs["val"]] == [str(tmp_path / "gone.mp4")]
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "video_text.csv").write_text("video,caption\nc.mp4,three\n")
  with pytest.raises(bb.DatasetLayoutError, match=r"video_text: two candidates for video_text.csv"
                     r" under .*: mydata/video_text.csv and other/video_text.csv"):
    layout_testing.split_records(vt.Builder, "captions", tmp_path)


def test_split_without_any_video_is_one_line(tmp_path):
  (tmp_path / "video_text.csv").write_text("video,caption\nclips/a.mp4,one\nclips/b.mp4,two\n")
  with pytest.raises(bb.DatasetLayoutError) as info:
    testing.build(vt.Builder, "captions", tmp_path, tmp_path / "data")
  assert str(info.value) == (
      f"video_text/captions/train: none of the 2 annotated videos found under {tmp_path} "
      "(searched 5 folder levels for <id>.mp4/.avi/.webm/.mkv/.mov/.m4v/.flv); e.g. tried "
      f"{tmp_path / 'clips' / 'a.mp4'}")
