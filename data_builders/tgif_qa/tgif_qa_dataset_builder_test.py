"""tgif_qa builder on dummy files in the official TGIF-QA layout (tab-separated csv + gifs/)."""
from __future__ import annotations

import pathlib

import pytest

from data_builders.tgif_qa import tgif_qa_dataset_builder as tgif
from vlx.data import layout_testing, testing

MC_HEADER = "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey"
FRAMEQA_HEADER = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription"
# g1, g2 decode; g3 is corrupt; g4 is annotated but not downloaded.
REPORT = {"annotated": 4, "found": 2, "missing": 1, "corrupt": 1}


def _mc_rows(kind: str, gifs: list[str], first: int) -> list[str]:
  rows = []
  for i, gif in enumerate(gifs):
    n = first + i
    opts = "\t".join(f"{kind} option {n}.{k}" for k in range(5))
    rows.append(f'{gif}\tWhat does the "man" do {n} times ?\t{opts}\t{n % 5}\t'
                f"{kind.upper()}{n}\t{n}")
  return rows


def write_dummy(root: pathlib.Path) -> None:
  for i, gif in enumerate(("g1", "g2")):
    testing.write_video(root / "gifs" / f"{gif}.gif", num_frames=4, height=32, width=32, fps=8,
                        seed=i)
  testing.write_corrupt(root / "gifs" / "g3.gif")
  ann = root / "dataset"   # one folder down, as the tgif-qa repository keeps them
  ann.mkdir()
  for kind in ("action", "transition"):
    (ann / f"Train_{kind}_question.csv").write_text(
        "\n".join([MC_HEADER, *_mc_rows(kind, ["g1", "g2", "g3", "g4"], 0)]) + "\n")
    (ann / f"Test_{kind}_question.csv").write_text(
        "\n".join([MC_HEADER, *_mc_rows(kind, ["g1", "g2"], 10)]) + "\n")
  train = [("g1", "what is the dog eating ?", "bone", 0), ("g1", "how many dogs are there ?",
                                                          "two", 1),
           ("g2", "what is the color of the car ?", "red", 2), ("g3", "where is he ?", "room", 3),
           ("g4", "what is it ?", "cat", 0)]
  test = [("g1", "where is the dog ?", "park", 3), ("g2", "what is the man holding ?", "cup", 0)]
  for name, rows in (("Train", train), ("Test", test)):
    lines = [FRAMEQA_HEADER] + [f"{g}\t{q}\t{a}\t{t}\tFRAMEQA{i}\t{i}\tsome description ."
                                for i, (g, q, a, t) in enumerate(rows)]
    (ann / f"{name}_frameqa_question.csv").write_text("\n".join(lines) + "\n")


class TgifFrameQaTest(testing.VideoBuilderTestCase):
  """The full TFDS builder checks on frameqa (action / transition: direct builds below)."""
  DATASET_CLASS = tgif.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["frameqa"]
  SPLITS = {"train": 2, "test": 2}
  EXPECTED_REPORTS = {"train": REPORT}

  make_dummy_data = staticmethod(write_dummy)

  def check_examples(self, config_name, split, examples):
    if split != "train":
      return
    examples = testing.by_video_id(examples)
    qa = examples["g1"]["qa"]
    self.assertEqual(testing.decoded(qa["question"]),
                     ["what is the dog eating ?", "how many dogs are there ?"])
    self.assertEqual(testing.decoded(qa["answer"]), ["bone", "two"])
    self.assertEqual(testing.decoded(qa["qtype"]), ["object", "number"])
    self.assertEqual(testing.decoded(examples["g2"]["qa"]["qtype"]), ["color"])


def test_action_and_transition_configs(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  write_dummy(manual)
  for task in ("action", "transition"):
    builder = testing.build(tgif.Builder, task, manual, tmp_path / "data")
    assert testing.report_counts("tgif_qa", "train", task) == REPORT
    assert builder.info.splits["test"].num_examples == 2
    examples = testing.examples_by_id(builder, "train")
    assert sorted(examples) == ["g1", "g2"]
    ex = examples["g2"]
    assert ex["question"].decode() == 'What does the "man" do 1 times ?'
    assert testing.decoded(ex["mc_choices"]) == [f"{task} option 1.{k}" for k in range(5)]
    assert int(ex["mc_answer"]) == 1 and int(examples["g1"]["mc_answer"]) == 0
    # 4 GIF frames of 1/8 s (stored as 12-13 cs delays) resampled to 8 fps: 4-5 frames.
    assert ex["video"].shape in [(4, 32, 32, 3), (5, 32, 32, 3)]
    assert abs(float(ex["duration"]) - 0.5) <= 0.05


def test_missing_field_names_file_line_and_field(tmp_path):
  path = tmp_path / "Train_action_question.csv"
  rows = _mc_rows("action", ["g1", "g2"], 0)
  rows[1] = rows[1].replace("\t1\tACTION1", "\t\tACTION1")   # empty answer on line 3
  path.write_text("\n".join([MC_HEADER, *rows]) + "\n")
  with testing.raises_annotation_error(path, 3, "answer"):
    tgif.read_multiple_choice(str(path))


def test_bad_values_are_annotation_errors(tmp_path):
  path = tmp_path / "Test_frameqa_question.csv"
  path.write_text(FRAMEQA_HEADER + "\ng1\twhat ?\tcat\t7\tF1\t1\td .\n")
  with testing.raises_annotation_error(path, 2, "type"):
    tgif.read_frameqa(str(path))
  path.write_text(MC_HEADER.replace("\ta5", "") + "\n")        # a column missing from the header
  with testing.raises_annotation_error(path, 1, "a5"):
    tgif.read_multiple_choice(str(path))
  rows = _mc_rows("action", ["g1"], 0)
  path.write_text("\n".join([MC_HEADER, rows[0].replace("\t0\tACTION0", "\t5\tACTION0")]) + "\n")
  with testing.raises_annotation_error(path, 2, "answer", "0-4"):
    tgif.read_multiple_choice(str(path))


@pytest.mark.parametrize("layout", ["documented", "repo_and_release", "flat", "mp4", "nested"])
def test_release_layouts(tmp_path, layout):
  """dataset/ + gifs/ (documented); the tgif-qa checkout beside TGIF-Release/data/gifs/; csv
  files and GIFs at the top; GIFs converted to .mp4; everything in a folder of its own."""
  ann = {"repo_and_release": tmp_path / "tgif-qa-master" / "dataset",
         "flat": tmp_path}.get(layout, tmp_path / "dataset")
  gifs = {"repo_and_release": tmp_path / "TGIF-Release" / "data" / "gifs",
          "flat": tmp_path}.get(layout, tmp_path / "gifs")
  ann.mkdir(parents=True, exist_ok=True)
  (ann / "Train_action_question.csv").write_text(
      "\n".join([MC_HEADER, *_mc_rows("action", ["g1", "g2", "g3", "g4"], 0)]) + "\n")
  ext = ".mp4" if layout == "mp4" else ".gif"
  layout_testing.touch(gifs / f"g{i}{ext}" for i in (1, 2, 3))
  if layout == "nested":
    layout_testing.nest(tmp_path, "TGIF-QA")
  assert layout_testing.summary(tgif.Builder, "action", tmp_path) == {
      "train": (4, 3), "test": "missing: Test_action_question.csv"}
