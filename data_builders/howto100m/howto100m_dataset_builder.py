"""HowTo100M (Miech et al. 2019): 1.2M narrated instructional YouTube videos whose ASR captions
cut them into 136M clips; one example per caption segment, cut to [start, end] (configs
`default`, `max8`, `raw_captions`), or one example per whole video (`whole_videos`: pre-training
that draws its clips anywhere in a video, e.g. VIMPAC's long-range contrastive clips).

Nobody has all the videos (YouTube removals), so the build works from whatever subset is on disk
and reports "found N of M annotated videos". A video that is not on disk contributes one record
(so it is counted), not one per segment: `records` in the report counts segments of the videos
found plus one per missing video.

`whole_videos`: every video of HowTo100M_v1.csv (also the few without narration), the whole video
at 2 fps, short side 160 (room for 128-px crops at scale 160/128); `captions` holds all its
caption.json segment texts in order ([] without narration), `start` = `end` = -1 (no cut).
`max_frames` = WHOLE_VIDEO_MAX_FRAMES caps a video at 3600 frames: one longer than 30 min keeps
3600 evenly spread frames (below 2 fps there; `duration` tells). `records` = `annotated` then.
"""
from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl
from vlx.data import media

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv")
CSV_FILE = "HowTo100M_v1.csv"
WHOLE_VIDEO_MAX_FRAMES = 3600  # whole_videos: 30 min at 2 fps (longer ones are thinned evenly)
ANNOTATION_DIRS = ("", "HowTo100M")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
1. Annotations: https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/HowTo100M.zip (see
   https://www.di.ens.fr/willow/research/howto100m/) holds HowTo100M_v1.csv (video_id,
   category_1, category_2, rank, task_id) and caption.json ({video_id: {"start": [s, ...],
   "end": [s, ...], "text": [str, ...]}}, stop words removed). Config `raw_captions` reads
   raw_caption.json from raw_caption.zip (same format, unprocessed ASR text) instead.
2. Videos: request the download from the authors (form on the page above) or fetch them from
   YouTube by video_id (e.g. yt-dlp / video2dataset). Any subset works.
Layout:
  MANUAL_DIR/
    HowTo100M_v1.csv
    caption.json                 (and/or raw_caption.json)
    videos/<video_id>.mp4 | .webm | .mkv    (any sub-folders: the tree is searched by file name)
Files are found by name anywhere under manual_dir (5 folder levels: HowTo100M.zip unpacked with
its folder, videos in a folder of another name, ...).
Reading caption.json needs ~20 GB of RAM for the full release (it is one JSON object).
The `max8` config keeps at most 8 segments per video (evenly spread) for a lighter corpus.
The `whole_videos` config stores one example per video (whole, 2 fps, short side 160, at most
3600 frames; `captions` = all its segment texts).
"""


@dataclasses.dataclass
class HowToConfig(bb.VideoBuilderConfig):
  captions_file: str = "caption.json"
  max_segments: int = 0  # per video, evenly spread; 0 = all
  whole_videos: bool = False  # one example per video (uncut), captions = all its segment texts


def segments(entry, path: str, video_id: str) -> list[tuple[float, float, str]]:
  """(start, end, text) of one caption.json entry, validated; empty / reversed ones dropped."""
  if not isinstance(entry, dict):
    raise bb.AnnotationError(path, None, f"{video_id}", "an object with start, end and text")
  lists = [bb.require(entry, k, file=path, line=None, expected=f"a list in entry {video_id!r}")
           for k in ("start", "end", "text")]
  if len({len(v) for v in lists}) != 1:
    raise bb.AnnotationError(path, None, f"{video_id}.text", "start, end and text of equal length")
  out = []
  for start, end, text in zip(*lists):
    text = str(text).strip()
    if text and float(end) > float(start):
      out.append((float(start), float(end), text))
  return out


class Builder(bb.VideoDatasetBuilder):
  """HowTo100M caption segments as clips (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://www.di.ens.fr/willow/research/howto100m/"
  CITATION = ("@inproceedings{miech2019howto100m, title={HowTo100M: Learning a Text-Video "
              "Embedding by Watching Hundred Million Narrated Video Clips}, author={Miech, "
              "Antoine and Zhukov, Dimitri and Alayrac, Jean-Baptiste and Tapaswi, Makarand "
              "and Laptev, Ivan and Sivic, Josef}, booktitle={ICCV}, year={2019}}")
  BUILDER_CONFIGS = [
      HowToConfig(name="default", fps=2.0, short_side=256,
                  description="Every caption segment, 2 fps, short side 256."),
      HowToConfig(name="max8", fps=2.0, short_side=256, max_segments=8,
                  description="At most 8 segments per video (evenly spread), 2 fps, short 256."),
      HowToConfig(name="raw_captions", fps=2.0, short_side=256, captions_file="raw_caption.json",
                  description="Unprocessed ASR captions (raw_caption.json), 2 fps, short 256."),
      HowToConfig(name="whole_videos", fps=2.0, short_side=160,
                  max_frames=WHOLE_VIDEO_MAX_FRAMES, whole_videos=True,
                  description="One example per whole video (all its segment texts as captions), "
                              "2 fps, short side 160, at most 3600 frames (evenly spread)."),
  ]

  def _features(self):
    text = tfds.features.Text()
    return bb.caption_features(category_1=text, category_2=text, task_id=text)

  def _split_records(self, manual_dir: str):
    lay = bb.Layout(manual_dir, f"howto100m/{self.builder_config.name}",
                    video_dirs=("videos", ""),
                    video_extensions=(*VIDEO_EXTENSIONS, *rl.VIDEO_EXTENSIONS))
    missing = [n for n in (CSV_FILE, self.builder_config.captions_file)
               if lay.find(n, ANNOTATION_DIRS) is None]
    if missing:
      return {"train": rl.Missing(tuple(missing))}
    return {"train": self._records(manual_dir, lay)}   # streamed: 136M segments

  def _records(self, manual_dir: str, lay: bb.Layout | None = None):
    c = self.builder_config
    lay = lay or bb.Layout(manual_dir, "howto100m", video_dirs=("videos", ""))
    csv_path = lay.require(CSV_FILE, ANNOTATION_DIRS)
    captions_path = lay.require(c.captions_file, ANNOTATION_DIRS)
    captions = bb.read_json(captions_path)
    if not isinstance(captions, dict):
      raise bb.AnnotationError(captions_path, None, "<json>", "an object keyed by video_id")
    videos_dir = os.path.join(lay.root, "videos")
    seen = set()
    for _, row in bb.read_csv(csv_path, ["video_id"]):
      vid = row["video_id"].strip()
      # a few listed videos have no narration: no segments, but a whole video all the same
      if vid in seen or (vid not in captions and not c.whole_videos):
        continue
      seen.add(vid)
      meta = dict(category_1=row.get("category_1", ""), category_2=row.get("category_2", ""),
                  task_id=row.get("task_id", ""))
      path = lay.video(vid, "")
      if not path:  # counted as missing once, not once per segment
        yield bb.VideoRecord(key=f"{vid}:missing", fields=dict(video_id=vid, captions=[], **meta),
                             video_path=os.path.join(videos_dir, f"{vid}.mp4"))
        continue
      if c.whole_videos:
        texts = [t for _, _, t in segments(captions[vid], captions_path, vid)] \
            if vid in captions else []
        yield bb.VideoRecord(key=vid, video_path=path,
                             fields=dict(video_id=vid, captions=texts, **meta))
        continue
      segs = segments(captions[vid], captions_path, vid)
      if c.max_segments > 0:
        segs = [segs[i] for i in media.spread_indices(len(segs), c.max_segments)]
      for i, (start, end, text) in enumerate(segs):
        yield bb.VideoRecord(key=f"{vid}:{i:05d}", video_path=path, start=start, end=end,
                             fields=dict(video_id=vid, captions=[text], **meta))
