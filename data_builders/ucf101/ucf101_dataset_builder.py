"""ucf101: UCF101 action recognition (101 classes) read from the official release.

Labels come from ucfTrainTestlist/classInd.txt (1-based index -> ClassLabel index - 1, so the
official order is kept); configs split1/split2/split3 pick the official train/test lists.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

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
Files are found by name anywhere under manual_dir (5 folder levels: the class folders unpacked
without UCF-101/, the list files without ucfTrainTestlist/, both in a folder of their own ...).
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


def layout(root, index: int = 1) -> bb.Layout:
  return bb.Layout(root, f"ucf101/split{index}", video_dirs=(VIDEO_DIR, ""))


def _list_file(lay: bb.Layout, name: str) -> pathlib.Path:
  return pathlib.Path(lay.require(name, (LIST_DIR, "")))


def records(root, split: str, index: int, classes: list[str],
            lay: bb.Layout | None = None) -> list[bb.VideoRecord]:
  """The VideoRecords of one split ('train' | 'test') of official split `index`; clips are
  found by name in any folder (UCF-101/<Class>/, the class folders at the top, one folder)."""
  lay = lay or layout(root, index)
  out = []
  for _, rel, name in read_split_list(_list_file(lay, f"{split}list0{index}.txt"), classes):
    stem = pathlib.PurePosixPath(rel).stem
    out.append(bb.VideoRecord(
        key=stem, video_path=lay.video(stem, os.path.join(lay.root, VIDEO_DIR, rel)),
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
    index = self.builder_config.split_index
    lay = layout(manual_dir, index)
    class_index = lay.find("classInd.txt", (LIST_DIR, ""))
    if class_index is None:   # every split needs the class list
      return {split: rl.Missing(("classInd.txt",)) for split in ("train", "test")}
    classes = read_class_index(pathlib.Path(class_index))
    self.set_label_names(classes)
    # parse every list before any decoding: annotation errors surface at once
    return rl.per_split(("train", "test"),
                        lambda split: records(manual_dir, split, index, classes, lay))
