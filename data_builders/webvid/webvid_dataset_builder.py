"""WebVid-2M / WebVid-10M: stock-footage clips with their alt-text captions (Bain et al. 2021),
the video-text pre-training corpus of Frozen, ALPRO, All-in-one and VIOLET.

The release is caption CSVs; the videos are fetched from their URLs by the user (most links are dead
now, so every copy is partial: the build reports how many annotated videos it found).
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
from typing import Iterable, Iterator

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
_PROBE = 200  # annotated rows probed to detect the video layout

MANUAL_DOWNLOAD_INSTRUCTIONS = """
1. Caption CSVs (the official release, https://github.com/m-bain/webvid; mirrored at
   http://www.robots.ox.ac.uk/~maxbain/webvid/): results_2M_train.csv and results_2M_val.csv for
   config 2M, results_10M_train.csv and results_10M_val.csv for config 10M. Columns:
   videoid,contentUrl,duration,page_dir,name (name = the caption).
2. Videos, with either downloader:
   - the official script: `python download.py --csv_path results_2M_train.csv --partitions 1
     --part 0 --data_dir MANUAL_DIR` (repeat for the val CSV) writes
     MANUAL_DIR/videos/<page_dir>/<videoid>.mp4;
   - video2dataset (`--url_col contentUrl --caption_col name
     --save_additional_columns '[videoid,page_idx,page_dir,duration]'`) with
     `--output_format files --output_folder MANUAL_DIR/videos`, or with `webdataset` output
     untarred in place (`for t in *.tar; do mkdir -p ${t%.tar}; tar -xf $t -C ${t%.tar}; done`):
     <shard>/<key>.mp4 + <key>.json (the json holds the videoid);
   - anything else that leaves MANUAL_DIR/videos/<videoid>.mp4 (flat).
Layout (the CSVs may also sit in MANUAL_DIR/metadata/):
  MANUAL_DIR/
    results_2M_train.csv
    results_2M_val.csv
    videos/
      000001_000050/1066674784.mp4     (official: <page_dir>/<videoid>.mp4)
      ... or 1066674784.mp4            (flat)  ... or 00000/000000000.mp4 + .json (video2dataset)
The layout is detected (the CSVs and videos/ may also sit one folder down, e.g. webvid/; videos
found nowhere above are looked up as <videoid>.<ext> anywhere under MANUAL_DIR); a split whose CSV
is absent is not built. Videos that are absent or unreadable are skipped and reported.
"""


@dataclasses.dataclass
class WebVidConfig(bb.VideoBuilderConfig):
  release: str = "2M"  # which CSVs: results_<release>_{train,val}.csv


def _config(name: str, release: str, fps: float, short: int, max_frames: int, desc: str):
  return WebVidConfig(name=name, release=release, fps=fps, short_side=short,
                      max_frames=max_frames, description=desc)


def video2dataset_index(root: str) -> dict[str, str]:
  """{videoid: video path} from video2dataset's <key>.json sidecars (read only when needed)."""
  index = {}
  for folder, _, files in os.walk(root):
    names = set(files)
    for f in files:
      if not f.endswith(".json"):
        continue
      stem = f[:-5]
      video = next((stem + e for e in VIDEO_EXTENSIONS if stem + e in names), None)
      if video is None:
        continue
      try:
        with open(os.path.join(folder, f)) as fh:
          vid = json.load(fh).get("videoid")
      except (OSError, ValueError):
        continue
      if vid is not None:
        index[str(vid)] = os.path.join(folder, video)
  return index


def read_rows(csv_path: str) -> Iterator[dict]:
  """{videoid, page_dir, name} per CSV row (streamed: the 10M CSV is never held whole)."""
  with open(csv_path, encoding="utf-8-sig", newline="") as f:
    header = next(csv.reader(f), [])
  if "name" not in header:
    raise bb.AnnotationError(csv_path, 1, "name", "a column 'name' (the caption) in the header "
                             f"(found: {', '.join(header)})")
  for _, row in bb.read_csv(csv_path, ["videoid"]):
    yield dict(videoid=row["videoid"].strip(), page_dir=(row.get("page_dir") or "").strip(),
               name=(row.get("name") or "").strip())


def records(rows: Iterable[dict], locate) -> Iterator[bb.VideoRecord]:
  """One record per videoid with a caption (repeated videoids keep their first row)."""
  seen = set()
  for row in rows:
    if row["videoid"] in seen or not row["name"]:
      continue
    seen.add(row["videoid"])
    yield bb.VideoRecord(key=row["videoid"], video_path=locate(row),
                         fields=dict(video_id=row["videoid"], captions=[row["name"]]))


class VideoLocator:
  """Finds a row's video: videos/<page_dir>/<id>.mp4, videos/<id>.mp4, video2dataset's files, or
  (when the first rows find none of those) <id>.<ext> anywhere under manual_dir."""

  def __init__(self, manual_dir: str, rows: list[dict], videos_dir: str | None = None):
    videos = videos_dir or os.path.join(manual_dir, "videos")
    self.root = videos if os.path.isdir(videos) else manual_dir
    probe = rows[:_PROBE]
    hits = sum(os.path.exists(self.official(r)) or os.path.exists(self.flat(r)) for r in probe)
    self.index = {}
    if probe and hits == 0:
      self.index = video2dataset_index(self.root) or bb.index_videos(
          manual_dir, (*VIDEO_EXTENSIONS, *rl.VIDEO_EXTENSIONS))
    # Which path to name in the report for videos that are nowhere.
    self.expected = self.official if any(r.get("page_dir") for r in probe) else self.flat

  def official(self, row: dict) -> str:
    return os.path.join(self.root, row.get("page_dir") or "", f"{row['videoid']}.mp4")

  def flat(self, row: dict) -> str:
    return os.path.join(self.root, f"{row['videoid']}.mp4")

  def __call__(self, row: dict) -> str:
    if row["videoid"] in self.index:
      return self.index[row["videoid"]]
    for path in (self.official(row), self.flat(row)):
      if os.path.exists(path):
        return path
    return self.expected(row)


def stream(csv_path: str, manual_dir: str, videos_dir: str | None = None
           ) -> Iterator[bb.VideoRecord]:
  """The records of one CSV, streamed; the first rows pick the video layout."""
  rows = read_rows(csv_path)
  head = list(itertools.islice(rows, _PROBE))
  yield from records(itertools.chain(head, rows), VideoLocator(manual_dir, head, videos_dir))


class Builder(bb.VideoDatasetBuilder):
  """WebVid-2M / 10M captioned videos (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://m-bain.github.io/webvid-dataset/"
  CITATION = ("@inproceedings{bain2021frozen, title={Frozen in Time: A Joint Video and Image "
              "Encoder for End-to-End Retrieval}, author={Bain, Max and Nagrani, Arsha and "
              "Varol, G{\\\"u}l and Zisserman, Andrew}, booktitle={ICCV}, year={2021}}")
  BUILDER_CONFIGS = [
      _config("2M", "2M", 2.0, 256, 0, "WebVid-2M, 2 fps, short side 256."),
      _config("10M", "10M", 2.0, 256, 0, "WebVid-10M, 2 fps, short side 256."),
      _config("2M_lite", "2M", 1.0, 224, 16, "WebVid-2M, 1 fps, short side 224, <= 16 frames "
              "(enough for the 3-8 frames per clip the papers sample; ~4x less disk)."),
      _config("10M_lite", "10M", 1.0, 224, 16, "WebVid-10M, 1 fps, short side 224, <= 16 frames."),
  ]

  def _features(self):
    return bb.caption_features()

  def _split_records(self, manual_dir: str):
    release = self.builder_config.release
    # Two levels: the CSVs and videos/ sit near the top; the video files are not indexed here
    # (10M of them): VideoLocator probes the documented places first.
    lay = bb.Layout(manual_dir, f"webvid/{self.builder_config.name}", index_videos=False,
                    max_depth=2, skip=("videos",))
    videos = lay.find_dir("videos", ("",))
    out: dict[str, object] = {}
    for split in ("train", "val"):
      name = f"results_{release}_{split}.csv"
      path = lay.find(name, ("", "metadata"))
      out[split] = stream(path, manual_dir, videos) if path else rl.Missing((name,))
    return out
