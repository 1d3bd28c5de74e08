"""msrvtt builder on dummy files in the official MSR-VTT / MSRVTT-QA / JSFusion layouts."""
from __future__ import annotations

import json
import pathlib

import pytest

from data_builders.msrvtt import msrvtt_dataset_builder as msrvtt
from vlx.data import builder_base as bb
from vlx.data import layout_testing, release_layout as rl, testing

# Official splits: video0-2 train, video3 validate, video7010-7012 test. video2 is corrupt and
# video7011 was never downloaded.
SPLIT_OF = {0: "train", 1: "train", 2: "train", 3: "validate", 7010: "test", 7011: "test",
            7012: "test"}
MC_HEADER = "key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer"


def _caption(n: int, k: int) -> str:
  return f"caption {k} of video {n}"


def _info(ids: list[int], first_sen: int) -> dict:
  videos = [{"category": 3, "url": f"https://www.youtube.com/watch?v=x{n}", "video_id": f"video{n}",
             "start time": 1.0, "end time": 11.0, "split": SPLIT_OF[n], "id": n} for n in ids]
  sentences = [{"caption": _caption(n, k), "video_id": f"video{n}", "sen_id": first_sen + 2 * i + k}
               for i, n in enumerate(ids) for k in range(2)]
  return {"info": {"year": "2016"}, "videos": videos, "sentences": sentences}


def _qa(n: int, question: str, answer: str, qid: int) -> dict:
  return {"answer": answer, "category_id": 3, "id": qid, "question": question, "video_id": n}


def write_dummy(root: pathlib.Path) -> None:
  for n in (0, 1, 3):
    testing.write_video(root / "TrainValVideo" / f"video{n}.mp4", num_frames=4, height=32,
                        width=32, fps=8, seed=n)
  testing.write_corrupt(root / "TrainValVideo" / "video2.mp4")
  for n in (7010, 7012):
    testing.write_video(root / "TestVideo" / f"video{n}.mp4", num_frames=4, height=32, width=32,
                        fps=8, seed=n)
  (root / "train_val_videodatainfo.json").write_text(json.dumps(_info([0, 1, 2, 3], 0)))
  (root / "test_videodatainfo.json").write_text(json.dumps(_info([7010, 7011, 7012], 100)))
  lists = root / "msrvtt_data"   # as CLIP4Clip distributes them
  lists.mkdir()
  (lists / "MSRVTT_train.9k.csv").write_text(
      "video_id\nvideo0\nvideo1\nvideo2\nvideo3\nvideo7011\n")
  (lists / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
  (lists / "MSRVTT_JSFUSION_test.csv").write_text(
      "key,vid_key,video_id,sentence\n"
      'ret0,msr7010,video7010,"a man, in a hat, sings"\n'
      "ret1,msr7012,video7012,a dog runs on the beach\n")
  qa = root / "MSRVTT-QA"
  qa.mkdir()
  (qa / "train_qa.json").write_text(json.dumps([
      _qa(0, "what is a man doing?", "sing", 0), _qa(1, "who is running?", "dog", 1),
      _qa(0, "what is the man wearing?", "hat", 2), _qa(2, "what is shown?", "car", 3)]))
  (qa / "val_qa.json").write_text(json.dumps([_qa(3, "what is sliced?", "onion", 4)]))
  (qa / "test_qa.json").write_text(json.dumps([
      _qa(7010, "who sings?", "man", 5), _qa(7011, "what runs?", "dog", 6),
      _qa(7012, "where does the dog run?", "beach", 7)]))
  rows = [f"mc{i}\tmsr{n}\t" + "\t".join(f"option {k} for {n}" for k in range(5)) + f"\t{ans}"
          for i, (n, ans) in enumerate([(7010, 2), (7011, 4), (7012, 0)])]
  (root / "MSR_MC_test.csv").write_text("\n".join([MC_HEADER, *rows]) + "\n")


class MsrvttRetrievalTest(testing.VideoBuilderTestCase):
  """The full TFDS builder checks on the retrieval config (qa and mc: direct builds below)."""
  DATASET_CLASS = msrvtt.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["retrieval"]
  SPLITS = {"train_9k": 3, "train_7k": 2, "val": 1, "test_1ka": 2, "test_full": 2}
  # By design: train_7k and val are inside train_9k, which also holds 2000 official test videos.
  OVERLAPPING_SPLITS = ["train_9k", "train_7k", "val", "test_full"]
  EXPECTED_REPORTS = {"train_9k": {"annotated": 5, "found": 3, "missing": 1, "corrupt": 1},
                      "test_full": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0}}

  make_dummy_data = staticmethod(write_dummy)

  def check_examples(self, config_name, split, examples):
    examples = testing.by_video_id(examples)
    if split == "train_9k":
      self.assertEqual(sorted(examples), ["video0", "video1", "video3"])
    elif split == "train_7k":
      self.assertEqual(testing.decoded(examples["video1"]["captions"]),
                       [_caption(1, 0), _caption(1, 1)])
    elif split == "test_1ka":
      self.assertEqual(testing.decoded(examples["video7010"]["captions"]),
                       ["a man, in a hat, sings"])
    elif split == "test_full":
      self.assertEqual(len(examples["video7012"]["captions"]), 2)
    else:
      self.assertEqual(examples["video3"]["video"].shape, (1, 32, 32, 3))


def _build(config: str, tmp_path: pathlib.Path) -> dict[str, dict[str, dict]]:
  """{split: {video_id: example}} of `config` built from the dummy files."""
  manual = tmp_path / "manual"
  if not manual.exists():
    manual.mkdir()
    write_dummy(manual)
  builder = testing.build(msrvtt.Builder, config, manual, tmp_path / "data")
  return {split: testing.examples_by_id(builder, split) for split in builder.info.splits}


def test_qa_and_mc_configs(tmp_path):
  examples = _build("qa", tmp_path)
  assert {s: len(e) for s, e in examples.items()} == {"train": 2, "val": 1, "test": 2}
  assert testing.report_counts("msrvtt", "train", "qa") == {"annotated": 3, "found": 2,
                                                            "missing": 0, "corrupt": 1}
  assert testing.report_counts("msrvtt", "test", "qa") == {"annotated": 3, "found": 2,
                                                           "missing": 1, "corrupt": 0}
  qa = examples["train"]["video0"]["qa"]
  assert testing.decoded(qa["question"]) == ["what is a man doing?", "what is the man wearing?"]
  assert testing.decoded(qa["answer"]) == ["sing", "hat"]
  assert testing.decoded(qa["qtype"]) == ["", ""]

  examples = _build("mc", tmp_path)["test"]
  assert sorted(examples) == ["video7010", "video7012"]
  assert testing.report_counts("msrvtt", "test", "mc") == {"annotated": 3, "found": 2,
                                                           "missing": 1, "corrupt": 0}
  ex = examples["video7010"]
  assert ex["question"].decode() == ""
  assert testing.decoded(ex["mc_choices"]) == [f"option {k} for 7010" for k in range(5)]
  assert int(ex["mc_answer"]) == 2 and int(examples["video7012"]["mc_answer"]) == 0


def test_missing_fields_name_file_line_and_field(tmp_path):
  path = tmp_path / "MSRVTT_train.9k.csv"
  path.write_text("video_id\nvideo0\n\nclip1\nvideo1\n")   # blank line 3 skipped; line 4 bad
  with testing.raises_annotation_error(path, 4, "video_id"):
    msrvtt.read_video_list(str(path))
  info = _info([0, 1], 0)
  del info["sentences"][3]["caption"]
  path = tmp_path / "train_val_videodatainfo.json"
  path.write_text(json.dumps(info))
  with testing.raises_annotation_error(path, None, "sentences[3].caption"):
    msrvtt.read_videodatainfo([str(path)])
  path = tmp_path / "MSR_MC_test.csv"
  path.write_text(MC_HEADER + "\nmc0\tmsr1\ta\tb\tc\td\t\t1\n")
  with testing.raises_annotation_error(path, 2, "a5"):
    msrvtt.read_mc(str(path))
  path.write_text(MC_HEADER + "\nmc0\tvid1\ta\tb\tc\td\te\t1\n")
  with testing.raises_annotation_error(path, 2, "vid_key", "video123"):
    msrvtt.read_mc(str(path))
  path = tmp_path / "test_qa.json"
  path.write_text(json.dumps([_qa(1, "who?", "man", 0), {"question": "what?", "video_id": 2}]))
  with testing.raises_annotation_error(path, None, "[1].answer"):
    msrvtt.read_qa(str(path))


def test_clipbert_mc_jsonl_and_merged_captions(tmp_path):
  path = tmp_path / "msrvtt_mc_test.jsonl"
  path.write_text(json.dumps({"qid": "mc_7", "clip_name": "video9", "answer": 3,
                              "options": ["a", "b", "c", "d", "e"]}) + "\n")
  assert msrvtt.read_mc(str(path)) == [dict(key="mc_7", video="video9",
                                            choices=["a", "b", "c", "d", "e"], answer=3)]
  (tmp_path / "MSRVTT_data.json").write_text(json.dumps(_info([0, 7010], 0)))
  captions, splits, _ = msrvtt._caption_source(msrvtt.layout(tmp_path))
  assert captions["video7010"] == [_caption(7010, 0), _caption(7010, 1)]
  assert splits == {"video0": "train", "video7010": "test"}


# ------------------------------------------------------------------------------------------------
# Release layouts: the archives unpacked as they come.

TRAIN_IDS, TEST_IDS = [0, 1, 2, 3], [7010, 7011, 7012]
JSFUSION = ("key,vid_key,video_id,sentence\n"
            'ret0,msr7010,video7010,"a man, in a hat, sings"\n'
            "ret1,msr7012,video7012,a dog runs on the beach\n")


def write_release(root: pathlib.Path, layout: str, *, real: bool = False) -> None:
  """MSR-VTT as a user unpacks it (video7011 never downloaded; with `real`, video2 corrupt):
  2016        the 2016 release: TrainValVideo/, TestVideo/, the two *_videodatainfo.json
  2016_flat   the same with the video zips unpacked without their top folders
  clip4clip   CLIP4Clip's two zips side by side: msrvtt_data/ (MSRVTT_data.json + split csvs)
              and MSRVTT/videos/all/
  clip4clip_flat  the same without their top folders (csvs at the top, videos/all/)
  """
  flat = layout.endswith("_flat")
  root.mkdir(parents=True, exist_ok=True)
  if layout.startswith("2016"):
    paths = {f"video{n}": root / ("" if flat else ("TrainValVideo" if n < 7010 else "TestVideo"))
             / f"video{n}.mp4" for n in TRAIN_IDS + TEST_IDS}
    (root / "train_val_videodatainfo.json").write_text(json.dumps(_info(TRAIN_IDS, 0)))
    (root / "test_videodatainfo.json").write_text(json.dumps(_info(TEST_IDS, 100)))
  else:
    videos = root / ("videos/all" if flat else "MSRVTT/videos/all")
    paths = {f"video{n}": videos / f"video{n}.mp4" for n in TRAIN_IDS + TEST_IDS}
    data = root if flat else root / "msrvtt_data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "MSRVTT_data.json").write_text(json.dumps(_info(TRAIN_IDS + TEST_IDS, 0)))
    (data / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\nvideo3\n"
                                              "video7011\n")
    (data / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (data / "MSRVTT_JSFUSION_test.csv").write_text(JSFUSION)
  del paths["video7011"]
  if real:
    testing.write_videos(paths, corrupt="video2")
  else:
    layout_testing.touch(paths.values())


ALL_SPLITS = {"train_9k": (5, 4), "train_7k": (3, 3), "val": (1, 1), "test_1ka": (2, 2),
              "test_full": (3, 2)}
NO_JSFUSION = {**ALL_SPLITS, "train_9k": "missing: MSRVTT_train.9k.csv",
               "train_7k": "missing: MSRVTT_train.7k.csv",
               "test_1ka": "missing: MSRVTT_JSFUSION_test.csv"}


@pytest.mark.parametrize("layout,nested,expected", [
    ("2016", "", NO_JSFUSION), ("2016_flat", "", NO_JSFUSION), ("2016", "MSRVTT", NO_JSFUSION),
    ("clip4clip", "", ALL_SPLITS), ("clip4clip_flat", "", ALL_SPLITS),
    ("clip4clip", "downloads/msrvtt", ALL_SPLITS)])
def test_release_layouts(tmp_path, layout, nested, expected):
  write_release(tmp_path, layout)
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(msrvtt.Builder, "retrieval", tmp_path) == expected


def test_documented_layout_nested_and_qa_mc_found(tmp_path):
  write_dummy(tmp_path)
  layout_testing.nest(tmp_path, "MSRVTT")
  assert layout_testing.summary(msrvtt.Builder, "retrieval", tmp_path) == ALL_SPLITS
  assert layout_testing.summary(msrvtt.Builder, "qa", tmp_path) == {
      "train": (3, 3), "val": (1, 1), "test": (3, 2)}
  assert layout_testing.summary(msrvtt.Builder, "mc", tmp_path) == {"test": (3, 2)}


def test_clip4clip_zips_side_by_side_build(tmp_path, capsys):
  manual = tmp_path / "manual"
  write_release(manual, "clip4clip", real=True)
  builder = testing.build(msrvtt.Builder, "retrieval", manual, tmp_path / "data")
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train_9k": 3, "train_7k": 2, "val": 1, "test_1ka": 2, "test_full": 2}
  assert testing.report_counts("msrvtt", "train_9k") == {"annotated": 5, "found": 3,
                                                         "missing": 1, "corrupt": 1}
  assert "WARNING" not in capsys.readouterr().out


def test_2016_release_without_jsfusion_builds_val_and_test_full(tmp_path, capsys):
  manual = tmp_path / "manual"
  write_release(manual, "2016", real=True)
  builder = testing.build(msrvtt.Builder, "retrieval", manual, tmp_path / "data")
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "val": 1, "test_full": 2}
  warning = [l for l in capsys.readouterr().out.splitlines() if l.startswith("WARNING")]
  assert warning == [f"WARNING: msrvtt/retrieval: building val, test_full; not building "
                     f"train_9k (needs MSRVTT_train.9k.csv); train_7k (needs "
                     f"MSRVTT_train.7k.csv); test_1ka (needs MSRVTT_JSFUSION_test.csv): not "
                     f"found under {manual} (add them and rebuild with --overwrite to get those "
                     "splits too)"]


def test_no_videos_is_one_line_before_decoding(tmp_path):
  write_release(tmp_path, "clip4clip")
  for p in (tmp_path / "MSRVTT").rglob("*.mp4"):
    p.unlink()
  with pytest.raises(bb.DatasetLayoutError) as info:
    testing.build(msrvtt.Builder, "retrieval", tmp_path, tmp_path / "data")
  assert str(info.value) == (
      f"msrvtt/retrieval/train_9k: none of the 5 annotated videos found under {tmp_path} "
      "(searched 5 folder levels for <id>.mp4/.avi/.webm/.mkv/.mov/.m4v/.flv); e.g. tried "
      f"{tmp_path}/TrainValVideo/video0.mp4")


def test_no_annotation_and_ambiguous_annotation(tmp_path):
  layout_testing.touch([tmp_path / "videos" / "video0.mp4"])
  with pytest.raises(bb.DatasetLayoutError, match=(
      r"^msrvtt/retrieval: no split can be built from .*: MSRVTT_train.9k.csv, "
      r"train_val_videodatainfo.json \+ test_videodatainfo.json \(or MSRVTT_data.json\), "
      r"MSRVTT_train.7k.csv, train_val_videodatainfo.json \(or MSRVTT_data.json\), "
      r"MSRVTT_JSFUSION_test.csv, test_videodatainfo.json \(or MSRVTT_data.json\) not found")):
    rl.buildable(layout_testing.split_records(msrvtt.Builder, "retrieval", tmp_path),
                 "msrvtt/retrieval", str(tmp_path))
  write_release(tmp_path, "clip4clip")
  (tmp_path / "msrvtt_data").rename(tmp_path / "old")   # not a documented folder
  other = tmp_path / "new" / "MSRVTT_data.json"
  other.parent.mkdir()
  other.write_text(json.dumps(_info([0], 0)))
  with pytest.raises(bb.DatasetLayoutError, match=(
      r"^msrvtt/retrieval: two candidates for MSRVTT_data.json under .*: new/MSRVTT_data.json "
      r"and old/MSRVTT_data.json; remove or rename one")):
    layout_testing.summary(msrvtt.Builder, "retrieval", tmp_path)
  other.write_text((tmp_path / "old" / "MSRVTT_data.json").read_text())  # the same file twice
  assert layout_testing.summary(msrvtt.Builder, "retrieval", tmp_path) == ALL_SPLITS
  (tmp_path / "msrvtt_data").mkdir()   # a different copy in the documented folder wins
  (tmp_path / "msrvtt_data" / "MSRVTT_data.json").write_text(json.dumps(_info([0], 0)))
  assert msrvtt._caption_source(msrvtt.layout(tmp_path))[2] == str(
      tmp_path / "msrvtt_data" / "MSRVTT_data.json")
