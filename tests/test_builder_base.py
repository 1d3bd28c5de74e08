"""vlx.data.builder_base: annotation readers name file/line/field; builds count what they skip."""
import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vlx.data import builder_base as bb
from vlx.data import testing


def test_annotation_error_message():
  e = bb.AnnotationError("/d/a.csv", 7, "caption", "a non-empty value")
  assert str(e) == "/d/a.csv:7: field 'caption': expected a non-empty value"
  assert isinstance(e, ValueError) and (e.file, e.line, e.field) == ("/d/a.csv", 7, "caption")
  assert str(bb.AnnotationError("x.json", None, "videos", "a list")) == \
      "x.json: field 'videos': expected a list"


def test_read_csv_lines_and_errors(tmp_path):
  path = tmp_path / "a.csv"
  path.write_text('video,caption,split\nv1.mp4,"a dog, running",train\n\nv2.mp4,a cat,val\n')
  rows = list(bb.read_csv(path, ["video", "caption"]))
  assert rows == [(2, dict(video="v1.mp4", caption="a dog, running", split="train")),
                  (4, dict(video="v2.mp4", caption="a cat", split="val"))]
  path.write_text("video,text\nv1.mp4,hello\n")
  with pytest.raises(bb.AnnotationError, match=r"a.csv:1: field 'caption': expected a column "
                     r"named 'caption' in the header \(found: video, text\)"):
    list(bb.read_csv(path, ["video", "caption"]))
  path.write_text("video,caption\nv1.mp4,hello\nv2.mp4,\n")
  with pytest.raises(bb.AnnotationError, match=r"a.csv:3: field 'caption': expected a non-empty"):
    list(bb.read_csv(path, ["video", "caption"]))
  tsv = tmp_path / "b.tsv"
  tsv.write_text('a "quoted" caption\thttp://x/1.jpg\nsecond\thttp://x/2.jpg\n')
  rows = list(bb.read_csv(tsv, ["caption", "url"], delimiter="\t", fieldnames=["caption", "url"]))
  assert rows[0] == (1, dict(caption='a "quoted" caption', url="http://x/1.jpg"))
  assert rows[1][0] == 2
  with pytest.raises(FileNotFoundError, match="missing.csv"):
    list(bb.read_csv(tmp_path / "missing.csv", ["video"]))


def test_read_json_and_jsonl_errors(tmp_path):
  good = tmp_path / "g.json"
  good.write_text('{"v1": {"start": [0], "end": [1], "text": ["hi"]}}')
  assert bb.read_json(good)["v1"]["text"] == ["hi"]
  bad = tmp_path / "b.json"
  bad.write_text('{"v1": [1, 2,\n  ]}')
  with pytest.raises(bb.AnnotationError, match=r"b.json:2: field '<json>': expected valid JSON"):
    bb.read_json(bad)
  lines = tmp_path / "a.jsonl"
  lines.write_text('{"video": "a.mp4", "label": "dog"}\n\n{"video": "b.mp4"}\n')
  it = bb.read_jsonl(lines, ["video", "label"])
  assert next(it) == (1, dict(video="a.mp4", label="dog"))
  with pytest.raises(bb.AnnotationError, match=r"a.jsonl:3: field 'label': expected a non-empty"):
    next(it)
  lines.write_text('{"video": "a.mp4"}\n[1, 2]\n')
  with pytest.raises(bb.AnnotationError, match=r"a.jsonl:2: field '<json>': expected a JSON obj"):
    list(bb.read_jsonl(lines, ["video"]))
  with pytest.raises(bb.AnnotationError, match=r"f.txt:9: field 'x': expected an int"):
    bb.require({"x": ""}, "x", file="f.txt", line=9, expected="an int")
  assert bb.require({"x": 3}, "x", file="f.txt", line=9) == 3


def test_video_features_has_common_keys():
  feats = bb.video_features({"captions": tfds.features.Sequence(tfds.features.Text())})
  assert set(feats.keys()) == {"captions", "video", "video_id", "duration", "orig_fps", "start",
                               "end"}
  assert feats["video"].shape == (None, None, None, 3)


@pytest.fixture
def corpus(tmp_path):
  """6 good clips (.mp4/.webm/.gif/.jpg), 1 corrupt, 1 missing and 2 cuts of one video."""
  recs = []
  for i, ext in enumerate([".mp4", ".webm", ".avi", ".mkv", ".gif", ".jpg"]):
    path = tmp_path / f"v{i}{ext}"
    if ext == ".jpg":
      testing.write_image(path, seed=i)
    else:
      testing.write_video(path, num_frames=8, fps=10 if ext == ".gif" else 8, seed=i)
    recs.append(bb.VideoRecord(f"k{i}", str(path), dict(captions=[f"clip {i}"])))
  testing.write_corrupt(tmp_path / "bad.mp4")
  recs.append(bb.VideoRecord("bad", str(tmp_path / "bad.mp4"), dict(captions=["x"])))
  recs.append(bb.VideoRecord("gone", str(tmp_path / "gone.mp4"), dict(captions=["x"])))
  recs.append(bb.VideoRecord("cut", str(tmp_path / "v0.mp4"), dict(captions=["c"]), 0.25, 0.75))
  recs.append(bb.VideoRecord("late", str(tmp_path / "v0.mp4"), dict(captions=["c"]), 5.0, 6.0))
  return recs


def test_generate_examples_counts_and_report(tmp_path, corpus, capsys):
  config = bb.VideoBuilderConfig(name="c", fps=4, short_side=24)
  with testing.environ(VLX_BUILD_REPORT_DIR=str(tmp_path / "rep"), VLX_FRAME_CACHE=None):
    out = list(bb.generate_examples(corpus, config, builder_name="toy", split="train",
                                    num_workers=2))
  assert [k for k, _ in out] == ["k0", "k1", "k2", "k3", "k4", "k5", "cut"]
  ex = dict(out)
  assert len(ex["k0"]["video"]) == 4 and ex["k0"]["video_id"] == "v0"  # 8 frames at 8 fps, 1 s
  assert ex["k0"]["duration"] == pytest.approx(1.0) and ex["k0"]["orig_fps"] == pytest.approx(8)
  assert (ex["k0"]["start"], ex["k0"]["end"]) == (-1.0, -1.0)
  assert (ex["cut"]["start"], ex["cut"]["end"], len(ex["cut"]["video"])) == (0.25, 0.75, 2)
  assert len(ex["k5"]["video"]) == 1 and ex["k5"]["captions"] == ["clip 5"]
  report = bb.last_report("toy", "train")
  assert {k: report[k] for k in ("annotated", "found", "missing", "corrupt", "records",
                                 "examples", "failed_clips")} == dict(
      annotated=8, found=6, missing=1, corrupt=1, records=10, examples=7, failed_clips=1)
  assert report["missing_videos"] == ["gone.mp4"] and report["corrupt_videos"] == ["bad.mp4"]
  printed = capsys.readouterr().out
  assert "toy/train: found 6 of 8 annotated videos (1 missing, 1 corrupt/undecodable skipped)" \
      in printed
  saved = json.loads((tmp_path / "rep" / "toy-c-train.json").read_text())
  assert saved["found"] == 6 and saved["corrupt_errors"][0].startswith(str(tmp_path / "bad.mp4"))


def test_pool_and_inline_builds_agree(tmp_path, corpus):
  config = bb.VideoBuilderConfig(name="c", fps=2, short_side=0)
  with testing.environ(VLX_BUILD_REPORT_DIR=str(tmp_path / "rep"), VLX_FRAME_CACHE=None):
    pooled = list(bb.generate_examples(corpus, config, builder_name="toy", split="a",
                                       num_workers=2))
    inline = list(bb.generate_examples(corpus, config, builder_name="toy", split="b",
                                       num_workers=1))
  assert [k for k, _ in pooled] == [k for k, _ in inline]
  for (_, a), (_, b) in zip(pooled, inline):
    assert a["video"] == b["video"] and a["duration"] == b["duration"]
  first = tfds.features.Video((None, None, None, 3), encoding_format="jpeg")
  encoded = first.encode_example(pooled[0][1]["video"])  # what TFDS stores: the JPEGs as given
  assert list(encoded) == pooled[0][1]["video"]
  frame = np.asarray(Image.open(io.BytesIO(encoded[0])))
  assert frame.shape == (48, 64, 3)
  with pytest.raises(KeyError, match="no build report for toy/zzz"):
    bb.last_report("toy", "zzz")


def test_collect_records_yields_nothing(corpus):
  config = bb.VideoBuilderConfig(name="c")
  with bb.collect_records() as got:
    assert list(bb.generate_examples(iter(corpus), config, builder_name="toy", split="s")) == []
  assert got == [("toy", "s", config, corpus)]


def test_find_file_looks_one_folder_down_and_names_what_is_missing(tmp_path):
  (tmp_path / "annotations").mkdir()
  (tmp_path / "annotations" / "train.csv").write_text("a\n")
  assert bb.find_file(tmp_path, ["val.csv", "train.csv"]) == tmp_path / "annotations" / "train.csv"
  assert bb.find_file(str(tmp_path), "nope.json", required=False) is None
  with pytest.raises(FileNotFoundError, match=r"mydata: nope\.json not found in .* \(nor one "
                     r"folder down\); see the mydata builder's MANUAL_DOWNLOAD_INSTRUCTIONS"):
    bb.find_file(tmp_path, "nope.json", builder="mydata")
  with pytest.raises(FileNotFoundError, match=r"\(looked in \., annotations/\)"):
    bb.find_file(tmp_path, "nope.json", folders=["", "annotations"])


def test_entry_field_names_the_json_entry():
  assert bb.entry_field({"id": 3}, 0, "id", file="f.json") == 3
  with pytest.raises(bb.AnnotationError, match=r"f\.json: field 'videos\[2\]\.url'"):
    bb.entry_field({"url": "  "}, 2, "url", file="f.json", prefix="videos")


def test_index_videos_first_folder_wins(tmp_path):
  for folder in ("a", "b/sub"):
    (tmp_path / folder).mkdir(parents=True)
  (tmp_path / "a" / "x.mp4").write_bytes(b"1")
  (tmp_path / "b" / "sub" / "x.MP4").write_bytes(b"2")
  (tmp_path / "b" / "sub" / "y.webm").write_bytes(b"3")
  (tmp_path / "b" / "z.txt").write_bytes(b"4")
  index = bb.index_videos([tmp_path / "a", tmp_path / "b", tmp_path / "absent"], (".mp4", ".webm"))
  assert index == {"x": str(tmp_path / "a" / "x.mp4"), "y": str(tmp_path / "b" / "sub" / "y.webm")}
  assert bb.index_videos(tmp_path / "b", (".webm",), recursive=False) == {}


# ----------------------------------------------------------------------------- release layouts

def _tree(root, names):
  for name in names:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name)


def test_layout_prefers_documented_place_then_shallowest_and_names_ambiguity(tmp_path):
  _tree(tmp_path, ["a/b/c/split.csv", "zip/data/split.csv", "x/LIST.CSV", "y/list.csv"])
  lay = bb.Layout(tmp_path, "toy")
  assert lay.find("split.csv", ("data",)) == str(tmp_path / "zip/data/split.csv")
  assert lay.find("split.csv") == str(tmp_path / "zip/data/split.csv")  # shallower than a/b/c
  assert lay.find(["nope.csv", "SPLIT.csv"], ("b/c",)) == str(tmp_path / "a/b/c/split.csv")
  assert lay.find("nope.csv") is None
  with pytest.raises(bb.DatasetLayoutError, match=r"^toy: two candidates for LIST.CSV under "
                     r".*: x/LIST.CSV and y/list.csv; remove or rename one"):
    lay.find("list.csv")
  (tmp_path / "y/list.csv").write_text("x/LIST.CSV")   # the same bytes: not ambiguous
  assert bb.Layout(tmp_path, "toy").find("list.csv") == str(tmp_path / "x/LIST.CSV")
  with pytest.raises(bb.release_layout.FilesMissing, match=r"^toy: nope.csv or n2.csv not found"
                     r" under .* \(searched 5 folder levels\)"):
    lay.require(["nope.csv", "n2.csv"])


def test_layout_videos_by_stem_any_extension_case_and_depth(tmp_path):
  _tree(tmp_path, ["MSRVTT/videos/all/video1.MP4", "MSRVTT/videos/all/video2.webm",
                   "copy/video2.mp4", "old/videos/all/video2.mkv", "notes/video3.txt",
                   "1/2/3/4/5/deep.mp4", "1/2/3/4/5/6/too_deep.mp4", "__MACOSX/video4.mp4",
                   "big/skipme/video5.mp4"])
  lay = bb.Layout(tmp_path, "toy", video_dirs=("TrainValVideo", "videos/all"), skip=("skipme",))
  assert lay.video("video1", "/d/video1.mp4") == str(tmp_path / "MSRVTT/videos/all/video1.MP4")
  # documented folder first; among two there, the shallower; then the extension order
  assert lay.video("video2", "") == str(tmp_path / "MSRVTT/videos/all/video2.webm")
  assert lay.video(["video3", "video9"], "/d/video3.mp4") == "/d/video3.mp4"
  assert lay.video("deep", "") == str(tmp_path / "1/2/3/4/5/deep.mp4")
  assert [lay.video(v, "") for v in ("too_deep", "video4", "video5")] == ["", "", ""]
  assert lay.find_dir("all", ("MSRVTT/videos",)) == str(tmp_path / "MSRVTT/videos/all")


def test_split_helpers_warn_about_missing_splits_and_fail_when_none_is_left(tmp_path, capsys):
  lay = bb.Layout(tmp_path, "toy/c")
  def records(split):
    return [bb.VideoRecord("k", str(tmp_path / "v.mp4"), {})] if split == "a" else \
        lay.require(f"{split}.csv")
  splits = bb.release_layout.per_split(["a", "b"], records)
  assert splits["b"] == bb.Missing(("b.csv",))
  assert list(bb.release_layout.buildable(splits, "toy/c", str(tmp_path))) == ["a"]
  assert capsys.readouterr().out == (f"WARNING: toy/c: building a; not building b (needs b.csv):"
                                     f" not found under {tmp_path} (add them and rebuild with "
                                     "--overwrite to get those splits too)\n")
  with pytest.raises(bb.DatasetLayoutError, match=r"^toy/c: no split can be built from .*: "
                     r"b.csv not found \(searched 5 folder levels\)"):
    bb.release_layout.buildable({"b": splits["b"]}, "toy/c", str(tmp_path))
  with pytest.raises(bb.DatasetLayoutError, match=(
      r"^toy/c/a: none of the 1 annotated videos found under /m \(searched 5 folder levels for "
      r"<id>.mp4/.avi/.webm/.mkv/.mov/.m4v/.flv\); e.g. tried .*/v.mp4$")):
    bb.release_layout.check_videos_present({"a": splits["a"]}, "toy/c", "/m")


def test_generate_examples_stops_on_an_empty_split(tmp_path):
  config = bb.VideoBuilderConfig(name="c")
  testing.write_corrupt(tmp_path / "bad.mp4")
  recs = [bb.VideoRecord("a", str(tmp_path / "gone.mp4"), {}),
          bb.VideoRecord("b", str(tmp_path / "bad.mp4"), {})]
  with testing.environ(VLX_BUILD_REPORT_DIR=str(tmp_path / "rep"), VLX_FRAME_CACHE=None):
    with pytest.raises(bb.DatasetLayoutError, match=(
        r"^toy/c/s: none of the 2 annotated videos could be decoded \(1 found, all "
        r"undecodable\), e.g. .*bad.mp4")):
      list(bb.generate_examples(recs, config, builder_name="toy", split="s", num_workers=1,
                                where="/m"))
    with pytest.raises(bb.DatasetLayoutError, match=(
        r"^toy/c/s: none of the 1 annotated videos found under /m .*; e.g. tried .*gone.mp4$")):
      list(bb.generate_examples(recs[:1], config, builder_name="toy", split="s", num_workers=1,
                                where="/m"))


def test_layout_big_media_folders_skip_sidecars_not_annotations(tmp_path, monkeypatch):
  """10k videos unpacked beside the annotation json (MSR-VTT without TrainValVideo/): the json
  is found; img2dataset / video2dataset sidecars of a big folder are not indexed."""
  monkeypatch.setattr(bb.release_layout, "_BIG_DIR", 3)
  _tree(tmp_path, ["video0.mp4", "video1.mp4", "video1.json", "000.jpg", "000.json",
                   "train_val_videodatainfo.json", "shard/a.mp4"])
  lay = bb.Layout(tmp_path, "toy")
  assert lay.find("train_val_videodatainfo.json") == str(tmp_path / "train_val_videodatainfo.json")
  assert (lay.find("video1.json"), lay.find("000.json")) == (None, None)
  assert lay.video("video1", "") == str(tmp_path / "video1.mp4")
