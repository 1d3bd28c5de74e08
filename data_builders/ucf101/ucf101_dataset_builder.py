"""ucf101: UCF101 action recognition (101 classes) read from the official release.

Labels come from ucfTrainTestlist/classInd.txt (1-based index -> ClassLabel index - 1, so the
official order is kept); configs split1/split2/split3 pick the official train/test lists.
"""
from __future__ import annotations

import dataclasses
import pathlib

import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb

VIDEO_DIR = "UCF-101"
LIST_DIR = "ucfTrainTestlist"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from the UCF101 page (https://www.crcv.ucf.edu/data/UCF101.php):
  UCF101.rar (the videos) and UCF101TrainTestSplits-RecognitionTask.zip (the splits),
then extract both into manual_dir so that it holds:
  manual_dir/
    UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi ... (101 class folders)
    ucfTrainTestlist/classInd.txt, trainlist01.txt .. trainlist03.txt, testlist01.txt .. testlist03.txt
(`unrar x UCF101.rar manual_dir/` and `unzip UCF101TrainTestSplits-RecognitionTask.zip -d manual_dir/`)
"""


@dataclasses.dataclass
class Ucf101Config(bb.VideoBuilderConfig):
  """Which of the three official train/test splits to build."""
  split_index: int = 1


def read_class_index(path: pathlib.Path) -> list[str]:
  """classInd.txt ("<1-based index> <ClassName>" per line) -> class names in index order."""
  names: dict[int, str] = {}
  for line_no, line in enumerate(path.read_text().splitlines(), 1):
    parts = line.split()
    if not parts:
      continue
    if len(parts) != 2 or not parts[0].isdigit():
      field = "class name" if len(parts) == 1 else "index"
      raise bb.AnnotationError(str(path), line_no, field, "'<1-based index> <ClassName>'")
    names[int(parts[0])] = parts[1]
  if sorted(names) != list(range(1, len(names) + 1)):
    raise bb.AnnotationError(str(path), None, "index",
                             f"indices 1..{len(names)} each once, got {sorted(names)}")
  return [names[i] for i in range(1, len(names) + 1)]


def read_split_list(path: pathlib.Path, classes: list[str]) -> list[tuple[int, str, str]]:
  """train/test list -> [(line, "Class/v_Class_gXX_cYY.avi", class name)].

  Train lists carry the 1-based label after the path, test lists do not; the class always comes
  from the folder part, and a train label must agree with it.
  """
  lookup = {c.lower(): c for c in classes}
  rows = []
  for line_no, line in enumerate(path.read_text().splitlines(), 1):
    parts = line.split()
    if not parts:
      continue
    rel = parts[0].replace("\\", "/")
    folder = rel.split("/")[0] if "/" in rel else ""
    if folder.lower() not in lookup:
      raise bb.AnnotationError(str(path), line_no, "video path",
                               "'<ClassName>/<clip>.avi' with a class from classInd.txt")
    name = lookup[folder.lower()]
    if len(parts) > 1:
      if not parts[1].isdigit() or int(parts[1]) != classes.index(name) + 1:
        raise bb.AnnotationError(str(path), line_no, "label",
                                 f"{classes.index(name) + 1} (classInd.txt index of {name})")
    rows.append((line_no, rel, name))
  return rows


def _list_file(root: pathlib.Path, name: str) -> pathlib.Path:
  return bb.find_file(root, name, folders=[LIST_DIR], builder="ucf101",
                      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)


def records(root: pathlib.Path, split: str, index: int, classes: list[str]) -> list[bb.VideoRecord]:
  """The VideoRecords of one split ('train' | 'test') of official split `index`."""
  out = []
  for _, rel, name in read_split_list(_list_file(root, f"{split}list0{index}.txt"), classes):
    out.append(bb.VideoRecord(
        key=pathlib.PurePosixPath(rel).stem,
        video_path=str(root / VIDEO_DIR / rel),
        fields=dict(label=classes.index(name), label_name=name)))
  return out


# TFDS ships its own `ucf101` (registered when tensorflow_datasets.video is imported); skipping the
# registry avoids a name clash. vlx and the `tfds build <dir>` CLI use this class directly.
class Builder(bb.VideoDatasetBuilder, skip_registration=True):
  """UCF101 from the official rar + split lists (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://www.crcv.ucf.edu/data/UCF101.php"
  # Clips average ~7 s: 4 fps keeps ~28 frames for 8-16 frame sampling; short side 256.
  BUILDER_CONFIGS = [
      Ucf101Config(name=f"split{i}", split_index=i, fps=4.0, short_side=256,
                   description=f"Official train/test split {i}, 4 fps, short side 256.")
      for i in (1, 2, 3)
  ]

  def _features(self):
    return bb.classification_features()   # names from classInd.txt (set in _split_records)

  def _split_records(self, manual_dir: str):
    root = pathlib.Path(manual_dir)
    classes = read_class_index(_list_file(root, "classInd.txt"))
    self.set_label_names(classes)
    index = self.builder_config.split_index
    # parse every list before any decoding: annotation errors surface at once
    return {split: records(root, split, index, classes) for split in ("train", "test")}
