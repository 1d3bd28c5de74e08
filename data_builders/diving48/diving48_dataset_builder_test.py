"""diving48 builder on a tiny official-layout copy: 3 classes, one corrupt and one missing video."""
from __future__ import annotations

import json
import pathlib
import re
import tempfile

import pytest
import tensorflow_datasets as tfds

from data_builders.diving48 import diving48_dataset_builder as d48
from vlx.data import builder_base, testing

VOCAB = [["Back", "15som", "05Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"],
         ["Inward", "35som", "NoTwis", "TUCK"]]
TRAIN = [("-mmq0PT-u8k_00155", 0), ("-mmq0PT-u8k_00156", 2), ("0LtLS9wROrk_00001", 1),
         ("0LtLS9wROrk_00002", 2)]
TEST = [("0LtLS9wROrk_00010", 0), ("1nHgTJ6O2CI_00003", 1), ("1nHgTJ6O2CI_00004", 2)]


def write_layout(root: pathlib.Path, *, corrupt: str = "", missing: str = "") -> None:
  (root / d48.VOCAB).write_text(json.dumps(VOCAB))
  for name, entries in (("train", TRAIN), ("test", TEST)):
    (root / d48.SPLIT_FILES[name]).write_text(json.dumps(
        [dict(vid_name=v, label=l, start_frame=0, end_frame=3) for v, l in entries]))
  for seed, (vid, _) in enumerate(TRAIN + TEST):
    path = root / d48.VIDEO_DIR / f"{vid}.mp4"
    if vid == missing:
      continue
    if vid == corrupt:
      testing.write_corrupt(path)
    else:
      testing.write_video(path, num_frames=4, height=32, width=40, fps=8, seed=seed)


class Diving48Test(testing.VideoBuilderTestCase):
  DATASET_CLASS = d48.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "test": 2}
  EXPECTED_REPORTS = {"train": {"annotated": 4, "found": 3, "missing": 0, "corrupt": 1},
                      "test": {"annotated": 3, "found": 2, "missing": 1, "corrupt": 0}}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    write_layout(root, corrupt="0LtLS9wROrk_00001", missing="1nHgTJ6O2CI_00003")

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    names = builder.info.features["label"].names
    self.assertEqual(names, ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE",
                             "Inward 35som NoTwis TUCK"])
    got = sorted((ex["video_id"].decode(), int(ex["label"]), ex["label_name"].decode(),
                  int(ex["end_frame"])) for ex in tfds.as_numpy(builder.as_dataset(split="test")))
    self.assertEqual(got, [("0LtLS9wROrk_00010", 0, names[0], 3),
                           ("1nHgTJ6O2CI_00004", 2, names[2], 3)])


@pytest.mark.parametrize("drop, field", [("label", "[1].label"), ("vid_name", "[1].vid_name")])
def test_missing_field_names_file_and_entry(drop, field):
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    (root / d48.VOCAB).write_text(json.dumps(VOCAB))
    entries = [dict(vid_name=v, label=l, start_frame=0, end_frame=3) for v, l in TRAIN]
    del entries[1][drop]
    path = root / d48.SPLIT_FILES["train"]
    path.write_text(json.dumps(entries))
    with pytest.raises(builder_base.AnnotationError,
                       match=r"Diving48_V2_train\.json: field '" + re.escape(field) + "'"):
      d48.read_split(path, root, d48.read_vocab(root / d48.VOCAB))


def test_label_out_of_vocab_range():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    path = root / "Diving48_V2_test.json"
    path.write_text(json.dumps([dict(vid_name="a", label=3, start_frame=0, end_frame=1)]))
    with pytest.raises(builder_base.AnnotationError, match=r"expected an integer in \[0, 3\)"):
      d48.read_split(path, root, [" ".join(v) for v in VOCAB])
