"""diving48 builder on a tiny official-layout copy: 3 classes, one corrupt and one missing video."""
from __future__ import annotations

import functools
import json
import pathlib

import pytest

from data_builders.diving48 import diving48_dataset_builder as d48
from vlx.data import layout_testing, testing

VOCAB = [["Back", "15som", "05Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"],
         ["Inward", "35som", "NoTwis", "TUCK"]]
TRAIN = [("-mmq0PT-u8k_00155", 0), ("-mmq0PT-u8k_00156", 2), ("0LtLS9wROrk_00001", 1),
         ("0LtLS9wROrk_00002", 2)]
TEST = [("0LtLS9wROrk_00010", 0), ("1nHgTJ6O2CI_00003", 1), ("1nHgTJ6O2CI_00004", 2)]
NAMES = ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE", "Inward 35som NoTwis TUCK"]


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "",
                 videos: str = d48.VIDEO_DIR, annotations: str = "", real: bool = True) -> None:
  """The json files in root/<annotations>, videos in root/<videos>; `real` = False writes
  placeholder videos."""
  (root / annotations).mkdir(parents=True, exist_ok=True)
  (root / annotations / d48.VOCAB).write_text(json.dumps(VOCAB))
  for name, entries in (("train", TRAIN), ("test", TEST)):
    (root / annotations / d48.SPLIT_FILES[name]).write_text(json.dumps(
        [dict(vid_name=v, label=l, start_frame=0, end_frame=3) for v, l in entries]))
  paths = {vid: root / videos / f"{vid}.mp4" for vid, _ in TRAIN + TEST}
  if real:
    testing.write_videos(paths, corrupt=corrupt, missing=missing)
  else:
    layout_testing.touch(p for v, p in paths.items() if v != missing)


class Diving48Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = d48.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 3, "missing": 0, "corrupt": 1},
                      "test": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0}}
  EXPECTED_LABEL_NAMES = NAMES
  make_dummy_data = staticmethod(functools.partial(
      write_layout, corrupt="0LtLS9wROrk_00001", missing="1nHgTJ6O2CI_00003"))

  def check_examples(self, config_name, split, examples):
    if split == "test":
      self.assertEqual(testing.label_rows(examples, "end_frame"),
                       [("0LtLS9wROrk_00010", 0, NAMES[0], 3),
                        ("1nHgTJ6O2CI_00004", 2, NAMES[2], 3)])


@pytest.mark.parametrize("drop, field", [("label", "[1].label"), ("vid_name", "[1].vid_name")])
def test_missing_field_names_file_and_entry(tmp_path, drop, field):
  (tmp_path / d48.VOCAB).write_text(json.dumps(VOCAB))
  entries = [dict(vid_name=v, label=l, start_frame=0, end_frame=3) for v, l in TRAIN]
  del entries[1][drop]
  path = tmp_path / d48.SPLIT_FILES["train"]
  path.write_text(json.dumps(entries))
  with testing.raises_annotation_error(path, None, field):
    d48.read_split(path, d48.layout(tmp_path), d48.read_vocab(tmp_path / d48.VOCAB))


def test_label_out_of_vocab_range(tmp_path):
  path = tmp_path / "Diving48_V2_test.json"
  path.write_text(json.dumps([dict(vid_name="a", label=3, start_frame=0, end_frame=1)]))
  with testing.raises_annotation_error(path, None, "[0].label", "an integer in [0, 3)"):
    d48.read_split(path, d48.layout(tmp_path), NAMES)


@pytest.mark.parametrize("videos,annotations,nested", [
    ("rgb", "", ""), ("", "", ""), ("rgb", "annotations", ""), ("rgb", "", "Diving48"),
    ("Diving48_rgb/rgb", "labels", "")])
def test_release_layouts(tmp_path, videos, annotations, nested):
  write_layout(tmp_path, videos=videos, annotations=annotations, real=False,
               missing="1nHgTJ6O2CI_00003")
  if nested:
    layout_testing.nest(tmp_path, nested)
  assert layout_testing.summary(d48.Builder, "default", tmp_path) == {"train": (4, 4),
                                                                      "test": (3, 2)}
