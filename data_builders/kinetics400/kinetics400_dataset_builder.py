"""kinetics400: Kinetics-400 action recognition read from the official annotation csvs.

The csvs (label, youtube_id, time_start, time_end, split[, is_cc]) name ~10 s clips, released as
<youtube_id>_<time_start:06d>_<time_end:06d>.mp4 (the CVDF mirror) either flat in the split folder
or in per-label folders; clips are found by name anywhere under manual_dir (release_layout), so
both layouts work, and the mirror's replacement_for_corrupted_k400 files take precedence.
`label` is a ClassLabel over the 400 class names of train.csv, sorted (the official class list is
alphabetical).
"""
from __future__ import annotations

import logging
import os
import pathlib

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")
COLUMNS = ("label", "youtube_id", "time_start", "time_end")
# TFDS split -> (csv names, video folder names) in the CVDF layout (and the older DeepMind names)
SPLITS = {
    "train": (("train.csv",), ("train",)),
    "validation": (("val.csv", "validate.csv"), ("val", "validate", "valid")),
    "test": (("test.csv",), ("test",)),
}
REPLACEMENT_DIR = "replacement/replacement_for_corrupted_k400"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Kinetics-400 from the CVDF mirror (https://github.com/cvdfoundation/kinetics-dataset,
k400_downloader.sh + k400_extractor.sh): the videos
https://s3.amazonaws.com/kinetics/400/{train,val,test}/part_*.tar.gz, the annotations
https://s3.amazonaws.com/kinetics/400/annotations/{train,val,test}.csv and optionally
https://s3.amazonaws.com/kinetics/400/replacement_for_corrupted_k400.tgz. manual_dir is the
mirror's k400/ folder:
  manual_dir/
    annotations/train.csv  val.csv  test.csv     (or the csvs directly in manual_dir/)
    train/<youtube_id>_<start:06d>_<end:06d>.mp4  (flat, or train/<label>/...mp4 per class)
    val/...   test/...
    replacement/replacement_for_corrupted_k400/*.mp4   (optional)
A split whose csv is absent is not built (train.csv is required: it defines the classes).
Files are found by name anywhere under manual_dir (5 folder levels: manual_dir may also be the
folder holding k400/, the csvs may sit beside the video folders, ...).
"""




def clip_name(youtube_id: str, start: int, end: int) -> str:
  return f"{youtube_id}_{start:06d}_{end:06d}"


def read_annotations(path: pathlib.Path) -> list[tuple[int, str, str, int, int]]:
  """[(line, label, youtube_id, time_start, time_end)] of one official csv."""
  rows = []
  for line, row in bb.read_csv(path, COLUMNS):
    times = []
    for field in ("time_start", "time_end"):
      try:
        times.append(int(float(row[field])))
      except ValueError:
        raise bb.AnnotationError(str(path), line, field, "a time in seconds") from None
    rows.append((line, row["label"].strip(), row["youtube_id"].strip(), *times))
  return rows


def layout(root) -> bb.Layout:
  """Clips by name in any folder; the mirror's replacement files win over the originals."""
  dirs = [d for _, folders in SPLITS.values() for d in folders]
  return bb.Layout(root, "kinetics400",
                   video_dirs=(REPLACEMENT_DIR, REPLACEMENT_DIR.split("/")[-1], *dirs),
                   video_extensions=(*VIDEO_EXTENSIONS, *rl.VIDEO_EXTENSIONS))


def records(path: pathlib.Path, classes: list[str], lay: bb.Layout,
            video_dir: pathlib.Path) -> list[bb.VideoRecord]:
  """One VideoRecord per csv row (duplicate clips once); labels must be train classes."""
  label_index = {name: i for i, name in enumerate(classes)}
  out, seen, duplicates = [], set(), 0
  for line, label, ytid, start, end in read_annotations(path):
    if label not in label_index:
      raise bb.AnnotationError(str(path), line, "label",
                               f"one of the {len(classes)} class names of train.csv")
    name = clip_name(ytid, start, end)
    if name in seen:
      duplicates += 1
      continue
    seen.add(name)
    video = lay.video([name, ytid], str(video_dir / f"{name}.mp4"))
    out.append(bb.VideoRecord(key=name, video_path=video,
                              fields=dict(label=label_index[label], label_name=label)))
  if duplicates:
    log.info("%s: %d duplicate rows listed once", path, duplicates)
  return out


class Builder(bb.VideoDatasetBuilder):
  """Kinetics-400 from the CVDF mirror's videos and csvs (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
  # 10 s clips: 2 fps keeps 20 frames (enough for 8-16 frame segment sampling); fps8 for
  # dense-sampling recipes (64 frames / clip-window), at 4x the storage.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=2.0, short_side=256,
                            description="2 fps, short side 256."),
      bb.VideoBuilderConfig(name="fps8", fps=8.0, short_side=256,
                            description="8 fps (dense sampling), short side 256."),
  ]

  def _features(self):
    return bb.classification_features()   # names from train.csv (set in _split_records)

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    csvs = {split: lay.find(names, ("annotations", "")) for split, (names, _) in SPLITS.items()}
    if csvs["train"] is None:   # train.csv defines the classes of every split
      return {split: rl.Missing(("train.csv",)) for split in SPLITS}
    classes = sorted({label for _, label, *_ in read_annotations(pathlib.Path(csvs["train"]))})
    self.set_label_names(classes)
    recs: dict[str, object] = {}
    for split, (names, dirs) in SPLITS.items():
      if csvs[split] is None:
        recs[split] = rl.Missing((names[0],))
        continue
      folder = lay.find_dir(dirs, ("", "videos")) or os.path.join(lay.root, dirs[0])
      recs[split] = records(pathlib.Path(csvs[split]), classes, lay, pathlib.Path(folder))
    return recs
