"""msrvtt builder on dummy files in the official MSR-VTT / MSRVTT-QA / JSFusion layouts."""
from __future__ import annotations

import json
import pathlib

from data_builders.msrvtt import msrvtt_dataset_builder as msrvtt
from vlx.data import testing

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
  captions, splits, _ = msrvtt._caption_source(str(tmp_path))
  assert captions["video7010"] == [_caption(7010, 0), _caption(7010, 1)]
  assert splits == {"video0": "train", "video7010": "test"}
