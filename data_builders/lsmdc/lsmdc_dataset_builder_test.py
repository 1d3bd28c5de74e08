"""lsmdc builder on a tiny official-layout copy (retrieval, mc and fib configs): header-less tsvs,
avi/<movie>/<clip>.avi clips, one corrupt and one missing clip."""
from __future__ import annotations

import pathlib

import pytest

from data_builders.lsmdc import lsmdc_dataset_builder as lsmdc
from vlx.data import layout_testing, testing

A = "0001_American_Beauty_00.00.51.926-00.00.54.094"
B = "0001_American_Beauty_00.01.02.000-00.01.05.500"   # corrupt
C = "1004_Juno_00.10.11.111-00.10.14.222"
D = "1004_Juno_00.20.00.000-00.20.03.000"              # missing
E = "3001_21_JUMP_STREET_00.00.49.046-00.00.52.127"
TIMES = "00.00.51.926\t00.00.54.094\t00.00.51.251\t00.00.54.800"
CAPTION = {A: ['SOMEONE glances at "the" mirror.', "He smiles."], B: ["SOMEONE runs."],
           C: ["SOMEONE opens the fridge."], D: ["They kiss."], E: ["SOMEONE's badge gleams."]}
DISTRACT = ["A car drives by.", "She sings.", "Rain falls.", "SOMEONE waves."]


def _line(clip: str, *cols: str) -> str:
  return "\t".join((clip, TIMES, *cols)) + "\n"


def write_layout(root: pathlib.Path, *, real: bool = True, movies: str = lsmdc.VIDEO_DIR,
                 annotations: str = "") -> None:
  """The annotation files in root/<annotations>, clips in root/<movies>/<movie>/ (B corrupt, D
  missing); `real` = False writes placeholders."""
  files = {
      "LSMDC16_annos_training.csv": [_line(A, CAPTION[A][0]), _line(B, CAPTION[B][0]),
                                     _line(A, CAPTION[A][1])],
      "LSMDC16_annos_val.csv": [_line(C, CAPTION[C][0])],
      "LSMDC16_challenge_1000_publictect.csv": [_line(D, CAPTION[D][0]), _line(E, CAPTION[E][0])],
      "LSMDC16_multiple_choice_train.csv": [_line(A, CAPTION[A][0], *DISTRACT),
                                            _line(B, CAPTION[B][0], *DISTRACT)],
      "LSMDC16_multiple_choice_valid.csv": [_line(C, CAPTION[C][0], *DISTRACT)],
      "LSMDC16_multiple_choice_test_randomized.csv": [
          _line(D, *DISTRACT[:2], CAPTION[D][0], *DISTRACT[2:], "3"),
          _line(E, *DISTRACT[:3], CAPTION[E][0], DISTRACT[3], "4")],
      "LSMDC16_annos_training_FIB.csv": [
          _line(A, CAPTION[A][0], 'SOMEONE ___ at "the" mirror.', "glances"),
          _line(A, CAPTION[A][1], "He _____.", "smiles"),
          _line(B, CAPTION[B][0], "SOMEONE _____.", "runs")],
      "LSMDC16_annos_val_FIB.csv": [_line(C, CAPTION[C][0], "SOMEONE opens the _____.", "fridge")],
      "LSMDC16_annos_test_FIB.csv": [_line(D, CAPTION[D][0], "They _____.", "kiss"),
                                     _line(E, CAPTION[E][0], "SOMEONE's _____ gleams.", "badge")],
  }
  (root / annotations).mkdir(parents=True, exist_ok=True)
  for name, lines in files.items():
    (root / annotations / name).write_text("".join(lines))
  paths = {clip: root / movies / lsmdc.movie_of(clip) / f"{clip}.avi" for clip in (A, B, C, E)}
  if real:
    testing.write_videos(paths, corrupt=B, fps=4)
  else:
    layout_testing.touch(paths.values())


class LsmdcTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = lsmdc.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["retrieval", "mc", "fib"]
  SPLITS = {"train": 1, "validation": 1, "test": 1}  # full_test: its file is absent, not built
  EXPECTED_REPORTS = {"train": {"annotated": 2, "found": 1, "missing": 0, "corrupt": 1},
                      "validation": {"annotated": 1, "found": 1, "missing": 0, "corrupt": 0},
                      "test": {"annotated": 2, "found": 1, "missing": 1, "corrupt": 0}}

  make_dummy_data = staticmethod(write_layout)

  def check_examples(self, config_name, split, examples):
    if split == "validation":
      return
    [ex] = examples
    self.assertEqual(ex["video_id"].decode(), A if split == "train" else E)
    if config_name == "retrieval" and split == "train":
      self.assertEqual(testing.decoded(ex["captions"]), CAPTION[A])
    elif config_name == "mc" and split == "train":
      choices = testing.decoded(ex["mc_choices"])
      self.assertEqual(sorted(choices), sorted([CAPTION[A][0], *DISTRACT]))
      self.assertEqual(choices[ex["mc_answer"]], CAPTION[A][0])
    elif config_name == "mc":
      self.assertEqual(int(ex["mc_answer"]), 3)  # "4" in the file, 1-based
      self.assertEqual(ex["mc_choices"][3].decode(), CAPTION[E][0])
      self.assertEqual(ex["question"].decode(), "")
    elif config_name == "fib" and split == "train":
      got = list(zip(testing.decoded(ex["fib"]["sentence"]), testing.decoded(ex["fib"]["answer"])))
      self.assertEqual(got, [('SOMEONE _____ at "the" mirror.', "glances"),
                             ("He _____.", "smiles")])


def test_shuffled_choices_spread_the_answer():
  answers = {lsmdc.shuffle_choices(list("abcde"), f"clip#{i}")[1] for i in range(40)}
  assert answers == {0, 1, 2, 3, 4}
  choices, answer = lsmdc.shuffle_choices(list("abcde"), "clip#7")
  assert choices[answer] == "a" and sorted(choices) == list("abcde")
  assert lsmdc.shuffle_choices(list("abcde"), "clip#7") == (choices, answer)  # deterministic


@pytest.mark.parametrize("name, line, field", [
    ("LSMDC16_multiple_choice_test_randomized.csv", _line(E, *DISTRACT, CAPTION[E][0]),
     "answer_index"),
    ("LSMDC16_annos_training.csv", "\t".join((A, TIMES)) + "\n", "sentence"),
    ("LSMDC16_annos_val_FIB.csv", _line(C, CAPTION[C][0], "SOMEONE opens the _____."), "blank"),
    ("LSMDC16_annos_val_FIB.csv", _line(C, CAPTION[C][0], "SOMEONE opens it.", "x"), "fill_in"),
])
def test_missing_field_names_file_line_field(tmp_path, name, line, field):
  write_layout(tmp_path)
  path = tmp_path / name
  path.write_text(path.read_text().splitlines(keepends=True)[0] + line)
  config = {"LSMDC16_multiple_choice_test_randomized.csv": "mc",
            "LSMDC16_annos_training.csv": "retrieval"}.get(name, "fib")
  with testing.raises_annotation_error(path, 2, field):
    lsmdc.records(tmp_path, config)


def test_movie_of_clip_id():
  assert lsmdc.movie_of(E) == "3001_21_JUMP_STREET"
  assert lsmdc.clip_path(lsmdc.layout("/r"), A) == f"/r/avi/0001_American_Beauty/{A}.avi"


@pytest.mark.parametrize("layout", ["documented", "movies_top", "annotations_dir", "nested"])
def test_release_layouts(tmp_path, layout):
  """The clips as the download scripts write them (avi/<movie>/), <movie>/ folders at the top,
  csv files in annotations/, everything inside a folder of its own."""
  write_layout(tmp_path, real=False, movies="" if layout == "movies_top" else lsmdc.VIDEO_DIR,
               annotations="annotations" if layout == "annotations_dir" else "")
  if layout == "nested":
    layout_testing.nest(tmp_path, "LSMDC")
  assert layout_testing.summary(lsmdc.Builder, "retrieval", tmp_path) == {
      "train": (2, 2), "validation": (1, 1), "test": (2, 1),
      "full_test": "missing: LSMDC16_annos_test.csv"}
