"""cc3m builder: official TSVs + img2dataset folders (default keys, or matched by url)."""
import json
import pathlib

import pytest

from data_builders.cc3m import cc3m_dataset_builder as cc
from vlx.data import builder_base as bb
from vlx.data import layout_testing, testing

TRAIN = [("a dog on grass", "http://x/0.jpg"), ("red bus", "http://x/1.jpg"),
         ("broken image", "http://x/2.jpg"), ('a "quoted" sign', "http://x/3.jpg"),
         ("dead link", "http://x/4.jpg")]
VAL = [("a lake", "http://y/0.png"), ("a tower", "http://y/1.png")]


class Cc3mTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = cc.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default"]
  SPLITS = {"train": 3, "validation": 2}
  EXPECTED_REPORTS = {"train": dict(annotated=5, found=3, missing=1, corrupt=1),
                      "validation": dict(annotated=2, found=2, missing=0, corrupt=0)}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    # train: header added by sed, default img2dataset keys, sidecars agree.
    (root / "Train_GCC-training.tsv").write_text(
        "caption\turl\n" + "".join(f"{c}\t{u}\n" for c, u in TRAIN))
    for i, (c, u) in enumerate(TRAIN[:4]):
      path = root / "training" / "00000" / f"{i:09d}.jpg"
      if i == 2:
        testing.write_corrupt(path)
      else:
        testing.write_image(path, height=40, width=30, seed=i)
      path.with_suffix(".json").write_text(json.dumps(dict(url=u, caption=c, key=f"{i:09d}")))
    # validation: no header, a custom shard size (keys don't follow the row index): by url.
    (root / "Validation_GCC-1.1.0-Validation.tsv").write_text(
        "".join(f"{c}\t{u}\n" for c, u in VAL))
    for i, (c, u) in enumerate(reversed(VAL)):
      path = root / "validation" / "00007" / f"00007000{i}.jpg"
      testing.write_image(path, height=300, width=400, seed=5 + i)
      path.with_suffix(".json").write_text(json.dumps(dict(url=u, caption=c)))

  def check_examples(self, config_name, split, examples):
    got = {e["video_id"].decode(): e["captions"][0].decode() for e in examples}
    if split == "train":
      self.assertEqual(got, {"000000000": TRAIN[0][0], "000000001": TRAIN[1][0],
                             "000000003": TRAIN[3][0]})
      self.assertEqual({e["video"].shape for e in examples}, {(1, 40, 30, 3)})
    else:
      self.assertEqual(sorted(got.values()), sorted(c for c, _ in VAL))
      self.assertEqual({e["video"].shape for e in examples}, {(1, 256, 341, 3)})


def test_webdataset_tars_need_untarring(tmp_path):
  (tmp_path / "training").mkdir()
  (tmp_path / "training" / "00000.tar").write_bytes(b"")
  with pytest.raises(bb.DatasetLayoutError, match="untar them in place"):
    cc.locate_images(str(tmp_path / "training"), [(1, "c", "http://x/0.jpg")])
  assert cc.key_path("/d", 123456) == "/d/00012/000123456.jpg"


@pytest.mark.parametrize("layout", ["documented", "nested", "val_only"])
def test_release_layouts(tmp_path, layout):
  """TSVs and img2dataset folders at the top or inside cc3m/; a missing TSV skips its split."""
  (tmp_path / "Train_GCC-training.tsv").write_text("".join(f"{c}\t{u}\n" for c, u in TRAIN))
  (tmp_path / "Validation_GCC-1.1.0-Validation.tsv").write_text(
      "".join(f"{c}\t{u}\n" for c, u in VAL))
  layout_testing.touch([tmp_path / "training" / "00000" / f"{i:09d}.jpg" for i in range(4)]
                       + [tmp_path / "validation" / "00000" / "000000001.jpg"])
  if layout == "val_only":
    (tmp_path / "Train_GCC-training.tsv").unlink()
  if layout == "nested":
    layout_testing.nest(tmp_path, "cc3m")
  expected = {"train": (5, 4), "validation": (2, 1)}
  if layout == "val_only":
    expected["train"] = "missing: Train_GCC-training.tsv"
  assert layout_testing.summary(cc.Builder, "default", tmp_path) == expected
