"""lsmdc builder on a tiny official-layout copy (retrieval, mc and fib configs): header-less tsvs,
avi/<movie>/<clip>.avi clips, one corrupt and one missing clip."""
from __future__ import annotations

import pathlib
import tempfile

import pytest
import tensorflow_datasets as tfds

from data_builders.lsmdc import lsmdc_dataset_builder as lsmdc
from vlx.data import builder_base, testing

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


def write_layout(root: pathlib.Path) -> None:
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
  for name, lines in files.items():
    (root / name).write_text("".join(lines))
  for seed, clip in enumerate((A, B, C, E)):
    path = root / lsmdc.VIDEO_DIR / lsmdc.movie_of(clip) / f"{clip}.avi"
    if clip == B:
      testing.write_corrupt(path)
    else:
      testing.write_video(path, num_frames=4, height=32, width=40, fps=4, seed=seed)


class LsmdcTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = lsmdc.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["retrieval", "mc", "fib"]
  SPLITS = {"train": 1, "validation": 1, "test": 1}  # full_test: its file is absent, not built
  EXPECTED_REPORTS = {"train": {"annotated": 2, "found": 1, "missing": 0, "corrupt": 1},
                      "validation": {"annotated": 1, "found": 1, "missing": 0, "corrupt": 0},
                      "test": {"annotated": 2, "found": 1, "missing": 1, "corrupt": 0}}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    write_layout(root)

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    self.assertEqual(set(builder.info.splits), {"train", "validation", "test"})
    [train] = tfds.as_numpy(builder.as_dataset(split="train"))
    [test] = tfds.as_numpy(builder.as_dataset(split="test"))
    self.assertEqual(train["video_id"].decode(), A)
    self.assertEqual(test["video_id"].decode(), E)
    config = builder.builder_config.name
    if config == "retrieval":
      self.assertEqual([c.decode() for c in train["captions"]], CAPTION[A])
    elif config == "mc":
      choices = [c.decode() for c in train["mc_choices"]]
      self.assertEqual(sorted(choices), sorted([CAPTION[A][0], *DISTRACT]))
      self.assertEqual(choices[train["mc_answer"]], CAPTION[A][0])
      self.assertEqual(int(test["mc_answer"]), 3)  # "4" in the file, 1-based
      self.assertEqual(test["mc_choices"][3].decode(), CAPTION[E][0])
      self.assertEqual(test["question"].decode(), "")
    else:
      got = [(s.decode(), a.decode())
             for s, a in zip(train["fib"]["sentence"], train["fib"]["answer"])]
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
def test_missing_field_names_file_line_field(name, line, field):
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    write_layout(root)
    path = root / name
    path.write_text(path.read_text().splitlines(keepends=True)[0] + line)
    config = {"LSMDC16_multiple_choice_test_randomized.csv": "mc",
              "LSMDC16_annos_training.csv": "retrieval"}.get(name, "fib")
    with pytest.raises(builder_base.AnnotationError, match=rf"{name}:2: field '{field}'"):
      lsmdc.records(root, config)


def test_movie_of_clip_id():
  assert lsmdc.movie_of(E) == "3001_21_JUMP_STREET"
  assert lsmdc.clip_path(pathlib.Path("/r"), A) == f"/r/avi/0001_American_Beauty/{A}.avi"
