"""msvd_qa builder on dummy files in the official MSVD / MSVD-QA layout."""
from __future__ import annotations

import json
import pathlib

import pytest

from data_builders.msvd_qa import msvd_qa_dataset_builder as msvd
from vlx.data import layout_testing, testing

CLIPS = {1: "-4wsuPCjDBc_5_15", 2: "zv2RIbUsnSw_159_165", 3: "bad_clip_1_2", 4: "gone_clip_3_9"}


def _qa(n: int, question: str, answer: str, qid: int) -> dict:
  return {"answer": answer, "id": qid, "question": question, "video_id": n}


def write_dummy(root: pathlib.Path) -> None:
  for i, n in enumerate((1, 2)):
    testing.write_video(root / "YouTubeClips" / f"{CLIPS[n]}.avi", num_frames=4, height=32,
                        width=32, fps=8, seed=i)
  testing.write_corrupt(root / "YouTubeClips" / f"{CLIPS[3]}.avi")   # clip 4 never downloaded
  (root / "youtube_mapping.txt").write_text(
      "".join(f"{clip} vid{n}\n" for n, clip in CLIPS.items()))
  ann = root / "MSVD-QA"
  ann.mkdir()
  splits = {
      "train": [_qa(1, "what is a man doing?", "cook", 0), _qa(2, "who is singing?", "woman", 1),
                _qa(1, "what is the man cutting?", "onion", 2), _qa(3, "what jumps?", "cat", 3),
                _qa(4, "who runs?", "man", 4)],
      "val": [_qa(1, "what is sliced?", "onion", 5)],
      "test": [_qa(2, "what does the woman do?", "sing", 6), _qa(1, "who cooks?", "man", 7)],
  }
  for split, entries in splits.items():
    (ann / f"{split}_qa.json").write_text(json.dumps(entries))


class MsvdQaTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = msvd.Builder
  SPLITS = {"train": 2, "val": 1, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 2, "missing": 1, "corrupt": 1},
                      "test": {"annotated": 2, "found": 2, "missing": 0, "corrupt": 0}}

  make_dummy_data = staticmethod(write_dummy)

  def check_examples(self, config_name, split, examples):
    if split != "train":
      return
    examples = testing.by_video_id(examples)
    self.assertEqual(sorted(examples), sorted([CLIPS[1], CLIPS[2]]))
    qa = examples[CLIPS[1]]["qa"]
    self.assertEqual(testing.decoded(qa["question"]),
                     ["what is a man doing?", "what is the man cutting?"])
    self.assertEqual(testing.decoded(qa["answer"]), ["cook", "onion"])
    self.assertEqual(testing.decoded(qa["qtype"]), ["", ""])
    self.assertEqual(examples[CLIPS[2]]["video"].shape, (1, 32, 32, 3))   # 0.5 s clip at 2 fps


def test_missing_field_names_file_entry_and_field(tmp_path):
  path = tmp_path / "train_qa.json"
  path.write_text(json.dumps([_qa(1, "what?", "cat", 0), {"answer": "dog", "id": 1,
                                                           "video_id": 2}]))
  with testing.raises_annotation_error(path, None, "[1].question"):
    msvd.read_qa(str(path))


def test_mapping_and_video_id_errors(tmp_path):
  mapping = tmp_path / "youtube_mapping.txt"
  mapping.write_text("clip_a_1_2 vid1\nclip_b_3_4 2\n")
  with testing.raises_annotation_error(mapping, 2, "vid"):
    msvd.read_mapping(str(mapping))
  mapping.write_text("clip_a_1_2 vid1\n")
  (tmp_path / "train_qa.json").write_text(json.dumps([_qa(9, "who?", "man", 0)]))
  with testing.raises_annotation_error(tmp_path / "train_qa.json", None, "video_id", "vid9"):
    msvd.records_for(msvd.layout(tmp_path), "train", msvd.read_mapping(str(mapping)),
                     str(mapping))
  (tmp_path / "train_qa.json").write_text(json.dumps([_qa("x", "who?", "man", 0)]))
  with testing.raises_annotation_error(tmp_path / "train_qa.json", None, "[0].video_id",
                                       "an integer clip index"):
    msvd.read_qa(str(tmp_path / "train_qa.json"))


def write_release(root: pathlib.Path, layout: str) -> None:
  """documented: YouTubeClips/ + MSVD-QA/ (mapping inside); flat: the clips and the QA files
  unpacked without their folders; renamed: the authors' video/vid<N>.avi copy."""
  root.mkdir(parents=True, exist_ok=True)
  ann = root if layout == "flat" else root / "MSVD-QA"
  ann.mkdir(exist_ok=True)
  (ann / "youtube_mapping.txt").write_text("".join(f"{c} vid{n}\n" for n, c in CLIPS.items()))
  (ann / "train_qa.json").write_text(json.dumps([_qa(n, "what?", "x", n) for n in CLIPS]))
  (ann / "test_qa.json").write_text(json.dumps([_qa(2, "who?", "y", 9)]))
  if layout == "renamed":
    paths = [root / "video" / f"vid{n}.avi" for n in (1, 2, 3)]
  else:
    paths = [(root if layout == "flat" else root / "YouTubeClips") / f"{CLIPS[n]}.avi"
             for n in (1, 2, 3)]
  layout_testing.touch(paths)


@pytest.mark.parametrize("layout,nested", [("documented", ""), ("flat", ""), ("renamed", ""),
                                          ("documented", "MSVD")])
def test_release_layouts(tmp_path, layout, nested):
  write_release(tmp_path, layout)
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(msvd.Builder, None, tmp_path) == {
      "train": (4, 3), "val": "missing: val_qa.json", "test": (1, 1)}
