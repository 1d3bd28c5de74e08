"""hmdb51: HMDB51 action recognition (51 classes) read from the official release.

The official split files (testTrainMulti_7030_splits/<class>_test_split<k>.txt) mark each clip
1 = train, 2 = test, 0 = unused in split k; configs split1/split2/split3. Classes are the 51 folder
names in alphabetical order (the order every published HMDB51 label list uses).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

VIDEO_DIR = "hmdb51_org"
SPLIT_DIR = "testTrainMulti_7030_splits"
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")
_MARKS = {"1": "train", "2": "test", "0": None}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from the HMDB51 page
(https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/):
  hmdb51_org.rar (the videos: one rar per class inside) and test_train_splits.rar (the splits).
Extract so that manual_dir holds (or any of: the class folders directly in manual_dir, as the
per-class rars unpack where they lie; every clip in one folder; the split files without their
folder; all of it inside a folder of its own -- files are found by name, 5 folder levels deep):
  manual_dir/
    hmdb51_org/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi ... (51 class folders)
    testTrainMulti_7030_splits/brush_hair_test_split1.txt ... (51 classes x 3 splits)
e.g. `mkdir -p manual_dir/hmdb51_org && unrar x hmdb51_org.rar /tmp/hmdb_rars/ &&
for r in /tmp/hmdb_rars/*.rar; do unrar x "$r" manual_dir/hmdb51_org/; done &&
unrar x test_train_splits.rar manual_dir/`
"""


@dataclasses.dataclass
class Hmdb51Config(bb.VideoBuilderConfig):
  """Which of the three official 70/30 splits to build."""
  split_index: int = 1


def split_files(lay: bb.Layout, index: int) -> dict[str, pathlib.Path]:
  """{class name: its split file} for official split `index` (classes sorted), from the folder
  holding the <class>_test_split<index>.txt files wherever it was unpacked."""
  pattern = _SPLIT_FILE.pattern.replace("[123]", str(index)).strip("^$")
  folder = lay.one_folder(pattern, (SPLIT_DIR, ""))
  if folder is None:
    raise rl.FilesMissing(lay.builder, lay.root,
                          [f"{SPLIT_DIR}/<class>_test_split{index}.txt (test_train_splits.rar)"])
  out = {}
  for name in lay.matching(pattern)[folder]:
    out[_SPLIT_FILE.match(name).group("cls")] = pathlib.Path(folder) / name
  return dict(sorted(out.items()))


def read_split_file(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
  """[(line, clip file name, 'train' | 'test' | None (unused))] of one class's split file."""
  rows = []
  for line_no, line in enumerate(path.read_text().splitlines(), 1):
    parts = line.split()
    if not parts:
      continue
    if len(parts) < 2:
      raise bb.AnnotationError(str(path), line_no, "mark", "'<clip>.avi <0|1|2>'")
    if parts[1] not in _MARKS:
      raise bb.AnnotationError(str(path), line_no, "mark",
                               "0 (unused), 1 (train) or 2 (test)")
    rows.append((line_no, parts[0], _MARKS[parts[1]]))
  return rows


def layout(root, index: int = 1) -> bb.Layout:
  return bb.Layout(root, f"hmdb51/split{index}", video_dirs=(VIDEO_DIR, ""))


def records(root, index: int) -> tuple[list[str], dict[str, list[bb.VideoRecord]]]:
  """(class names, {'train': records, 'test': records}) of official split `index`. Clips are
  found by name anywhere under root: hmdb51_org/<class>/, the class folders at the top (the
  per-class rars unpacked where they lie), or all clips in one folder."""
  lay = layout(root, index)
  files = split_files(lay, index)
  classes = list(files)
  out: dict[str, list[bb.VideoRecord]] = {"train": [], "test": []}
  for label, (name, path) in enumerate(files.items()):
    for _, clip, split in read_split_file(path):
      if split is None:
        continue
      stem = pathlib.PurePosixPath(clip).stem
      out[split].append(bb.VideoRecord(
          key=stem, video_path=lay.video(stem, os.path.join(lay.root, VIDEO_DIR, name, clip)),
          fields=dict(label=label, label_name=name)))
  return classes, out


class Builder(bb.VideoDatasetBuilder):
  """HMDB51 from the official rars + 70/30 split files (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/"
  # Clips are short (~3 s): 8 fps keeps ~24 frames for 8-16 frame sampling; short side 256.
  BUILDER_CONFIGS = [
      Hmdb51Config(name=f"split{i}", split_index=i, fps=8.0, short_side=256,
                   description=f"Official 70/30 split {i}, 8 fps, short side 256.")
      for i in (1, 2, 3)
  ]

  def _features(self):
    return bb.classification_features()   # names from the split files (set in _split_records)

  def _split_records(self, manual_dir: str):
    try:
      classes, recs = records(manual_dir, self.builder_config.split_index)
    except rl.FilesMissing as e:   # both splits need the split files
      return {split: rl.Missing(tuple(e.files)) for split in ("train", "test")}
    self.set_label_names(classes)
    return recs
