"""YT-Temporal-180M (Zellers et al., MERLOT, NeurIPS 2021): 6M YouTube videos with their ASR
transcripts, the corpus VIOLET's best checkpoint adds to WebVid + CC3M. One example per window of
consecutive timed ASR words; the caption is their text.

The release (what this builder reads; sources, read 2026-12):
- rowanz/merlot `data/README.md` (commit c85c18b): the dataset is released as per-video
  annotations, not videos; each holds `denoised` (spans of raw ASR `noisyasr` rewritten by a
  finetuned Grover model into `cleanasr`, with its `ctx_ppl`), `info` (the YouTube metadata) and
  `subtitles` (every ASR word with the approximate time it was said); `_te` is unused. The later
  README (commit 0930f76) points to https://rowanzellers.com/merlot for access and says the
  videos are not released (video ids, titles, descriptions are).
- rowanz/merlot `data/example_video/WAaKRUoY6Io.grover.json`: one such annotation, the field
  names this builder relies on: `{"denoised": [{"noisyasr", "cleanasr", "top_p", "ctx_ppl",
  "model_name"}, ...], "info": {"id", "title", "duration" (s), ..., "_filename":
  "videos/<id>.mp4"}, "subtitles": [{"word": str, "time": seconds}, ...]}`; `cleanasr` has no
  timing (MERLOT aligns it to the timed words, rowanz/merlot `data/process.py`).
- TencentARC/TVTS issue #2 quotes the release's files from the official site:
  `gs://merlot/yttemporal180m/yttemporal180m_{i:03d}of100.jsonl.gz`, i.e. 100 gzipped JSON-lines
  shards, one annotation object (as above) per line.
- showlab/all-in-one `AllInOne/datasets/yttemporal.py` (All-in-one pre-trains on the same corpus)
  keeps one annotation JSON per video, `videos/<subset>/annotations/<id>.json`, beside
  `videos/<subset>/data/<id>.mp4`, and builds each caption from the (aligned clean) words whose
  time falls inside a 10-15 s window.
A list of video ids alone has no text: it cannot make captioned clips and is not a layout here.

Clips (VIOLET's code has no YT-Temporal loader, spec §8): consecutive words are grouped into
windows of `clip_seconds` (default 10 s, All-in-one's window; MERLOT's ~32-token segments span
about as long): a window starts at its first word and takes every following word said before
start + clip_seconds; the next window starts at the next word. The clip is [start, start +
clip_seconds) cut at info.duration; windows with fewer than `min_words` words (after dropping
`[Music]`-style tags and HTML-entity debris) or starting after the video's end are dropped and
counted. The caption is the window's `cleanasr` words (aligned to the timed words with difflib;
words the cleaner added go with the preceding word), or the raw ASR words (`raw_asr` config, and
for videos without `denoised` or windows the cleaned text does not cover).

Reports: missing and corrupt videos as every builder (found N of M annotated videos, JSON report);
the text side (videos without ASR, windows dropped, windows on raw ASR) is printed at the end of
the split and written beside it as `yt_temporal-<config>-train.captions.json`.
"""
from __future__ import annotations

import dataclasses
import difflib
import gzip
import html
import json
import logging
import os
import re
from typing import Iterable, Iterator

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import media
from vlx.data import release_layout as rl

log = logging.getLogger(__name__)

SHARD_RX = re.compile(r"(?i).+\.jsonl(\.gz)?")          # the release's shards (and any .jsonl)
OFFICIAL_SHARD = "yttemporal180m_000of100.jsonl.gz"      # named in messages
PER_VIDEO_SUFFIX = ".grover.json"                        # MERLOT's example annotation name
ANNOTATION_DIRS = ("annotations",)                       # All-in-one's per-video JSON folder
SPLIT = "train"                                          # the release has no splits
_TAG = re.compile(r"^\[.*\]$")                            # [Music], [Applause]
_YTDLP_NAME = re.compile(r".*\[([^\[\]\s]+)\]")                # yt-dlp: '<title> [<id>]'
_NORM = re.compile(r"[\W_]+")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
1. Annotations (https://rowanzellers.com/merlot -> data; the release is annotations only): the 100
   shards yttemporal180m_000of100.jsonl.gz ... yttemporal180m_099of100.jsonl.gz (gsutil cp
   gs://merlot/yttemporal180m/* MANUAL_DIR/; if that bucket is gone, any copy of the shards).
   Any subset works; gunzipped (.jsonl) too. One JSON object per line and per video: info.id
   (YouTube id), info.duration, subtitles [{{word, time}}] (timed ASR words), denoised
   [{{cleanasr}}] (the cleaned transcript).
   Also read: one JSON per video in the same format, as <id>{PER_VIDEO_SUFFIX} anywhere (MERLOT's
   example) or <id>.json in a folder named annotations/ (All-in-one's copy:
   videos/<subset>/annotations/<id>.json).
2. Videos: download them from YouTube by id, e.g.
     zcat yttemporal180m_*.jsonl.gz | python -c "import sys, json; \\
       [print(json.loads(l)['info']['id']) for l in sys.stdin if l.strip()]" > ids.txt
     yt-dlp -f 'b[height<=360]/bv*[height<=360]' -o 'MANUAL_DIR/videos/%(id)s.%(ext)s' -a ids.txt
   yt-dlp's default names ('<title> [<id>].<ext>') are found too. Many videos are gone: the
   build reports how many it found.
Layout:
  MANUAL_DIR/
    yttemporal180m_000of100.jsonl.gz ... (or .jsonl, in any folder)
    videos/<id>.mp4 | .webm | .mkv | ...   (any sub-folders: found by file name, e.g.
                                            videos/<subset>/data/<id>.mp4)
Everything may sit inside a folder of its own (e.g. yttemporal180m/). Configs: `default` (10-s
windows, cleaned captions, 2 fps, short side 256), `raw_asr` (raw ASR words), `lite` (<= 8 windows
per video, 1 fps, short side 224, <= 16 frames).
"""


@dataclasses.dataclass
class YTTemporalConfig(bb.VideoBuilderConfig):
  clip_seconds: float = 10.0   # window of consecutive words per clip
  min_words: int = 3           # fewer words in a window: no usable text (dropped, counted)
  text: str = "denoised"       # 'denoised' (cleanasr aligned to the timed words) | 'asr'
  max_clips: int = 0           # per video, evenly spread; 0 = all


# ------------------------------------------------------------------------------ text and clips

@dataclasses.dataclass
class Video:
  """One annotation object, validated: its id, length and timed words."""
  video_id: str
  duration: float                 # seconds; 0 = unknown
  times: list[float]
  words: list[str]
  clean: list[str] | None         # cleanasr tokens, None when the object has none


@dataclasses.dataclass
class TextStats:
  """What the text side dropped, per split (printed and written at the end of the split)."""
  annotations: int = 0            # annotation objects read
  duplicates: int = 0             # same video id again (kept the first)
  no_asr: int = 0                 # objects without timed words
  missing_videos: int = 0
  windows: int = 0                # windows of the videos on disk
  no_text: int = 0                # dropped: fewer than min_words words
  past_end: int = 0               # dropped: start after info.duration
  capped: int = 0                 # dropped by max_clips
  raw_asr: int = 0                # captions from raw ASR words (denoised wanted)
  clips: int = 0                  # records written for the videos on disk
  unreadable_shards: list[str] = dataclasses.field(default_factory=list)


def _word(text) -> str:
  """A timed ASR word cleaned of HTML entities; '' for debris (`>>`, `[Music]`)."""
  w = html.unescape(str(text)).strip()
  if not w or _TAG.match(w) or not any(c.isalnum() for c in w):
    return ""
  return w


def parse_video(obj, path: str, line: int | None, fallback_id: str = "") -> Video:
  """A Video from one annotation object; malformed fields raise AnnotationError naming
  path, line and field."""
  if not isinstance(obj, dict):
    raise bb.AnnotationError(path, line, "<json>", f"a JSON object, got {type(obj).__name__}")
  info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
  vid = str(info.get("id") or obj.get("video_id") or obj.get("id") or fallback_id).strip()
  if not vid:
    raise bb.AnnotationError(path, line, "info.id", "the YouTube video id")
  try:
    duration = float(info.get("duration") or 0.0)
  except (TypeError, ValueError):
    raise bb.AnnotationError(path, line, "info.duration", "a number of seconds") from None
  subs = obj.get("subtitles") or []
  if not isinstance(subs, list):
    raise bb.AnnotationError(path, line, "subtitles", "a list of {word, time}")
  timed = []
  for i, s in enumerate(subs):
    if not isinstance(s, dict) or "word" not in s or "time" not in s:
      raise bb.AnnotationError(path, line, f"subtitles[{i}]", "an object with word and time")
    try:
      t = float(s["time"])
    except (TypeError, ValueError):
      raise bb.AnnotationError(path, line, f"subtitles[{i}].time", "a number of seconds") from None
    w = _word(s["word"])
    if w:
      timed.append((t, w))
  timed.sort(key=lambda tw: tw[0])   # stable: same-time words keep their order
  clean = None
  denoised = obj.get("denoised")
  if isinstance(denoised, list) and denoised:
    clean = []
    for i, d in enumerate(denoised):
      if not isinstance(d, dict) or not isinstance(d.get("cleanasr", ""), str):
        raise bb.AnnotationError(path, line, f"denoised[{i}].cleanasr", "a string")
      clean += html.unescape(d.get("cleanasr", "")).split()
  return Video(vid, duration, [t for t, _ in timed], [w for _, w in timed], clean)


def align(words: list[str], clean: list[str]) -> list[list[str]]:
  """For each timed ASR word, the cleaned words that stand for it (matched on lower-case
  alphanumerics; a replaced run is spread evenly over its ASR words; a cleaned word with no
  ASR counterpart goes with the preceding ASR word)."""
  out: list[list[str]] = [[] for _ in words]
  if not words:
    return out
  a = [_NORM.sub("", w.lower()) for w in words]
  b = [_NORM.sub("", c.lower()) for c in clean]
  # autojunk: very frequent words ('the') do not seed matches, only extend them: ~0.05 s for a
  # 1500-word video instead of seconds, and the runs between matches are short anyway.
  matcher = difflib.SequenceMatcher(None, a, b)
  for tag, i1, i2, j1, j2 in matcher.get_opcodes():
    if tag == "delete":
      continue
    if tag == "insert":
      out[max(i1 - 1, 0)].extend(clean[j1:j2])
      continue
    for k, j in enumerate(range(j1, j2)):
      out[i1 + (k * (i2 - i1)) // (j2 - j1)].append(clean[j])
  return out


def windows(times: list[float], clip_seconds: float) -> list[tuple[int, int]]:
  """[i, j) word ranges: each starts at a word and takes the words said before its time +
  clip_seconds; the next starts at the next word."""
  out, i = [], 0
  while i < len(times):
    j = i
    while j < len(times) and times[j] < times[i] + clip_seconds:
      j += 1
    out.append((i, j))
    i = j
  return out


def clips(video: Video, c: YTTemporalConfig, stats: TextStats
          ) -> list[tuple[int, float, float, str]]:
  """(window index, start, end, caption) of the usable windows of `video` (counted in stats)."""
  per_word = align(video.words, video.clean) if c.text == "denoised" and video.clean else None
  out = []
  spans = windows(video.times, c.clip_seconds)
  stats.windows += len(spans)
  for k, (i, j) in enumerate(spans):
    start = video.times[i]
    end = start + c.clip_seconds
    if video.duration > 0:
      if start >= video.duration:
        stats.past_end += 1
        continue
      end = min(end, video.duration)
    if j - i < c.min_words:
      stats.no_text += 1
      continue
    text = " ".join(w for ws in per_word[i:j] for w in ws) if per_word else ""
    if not text:
      stats.raw_asr += c.text == "denoised"
      text = " ".join(video.words[i:j])
    out.append((k, max(start, 0.0), end, text))
  if c.max_clips > 0 and len(out) > c.max_clips:
    stats.capped += len(out) - c.max_clips
    out = [out[i] for i in media.spread_indices(len(out), c.max_clips)]
  return out


# ------------------------------------------------------------------------------ annotation files

def _open_lines(path: str):
  return gzip.open(path, "rt", encoding="utf-8") if path.lower().endswith(".gz") else \
      open(path, encoding="utf-8-sig")


def read_shard(path: str, stats: TextStats) -> Iterator[Video]:
  """The Videos of one .jsonl / .jsonl.gz shard; a truncated gzip (interrupted download) ends
  the shard with a warning (counted in stats.unreadable_shards)."""
  line = 0
  try:
    with _open_lines(path) as f:
      for line, text in enumerate(f, 1):
        if not text.strip():
          continue
        try:
          obj = json.loads(text)
        except json.JSONDecodeError as e:
          raise bb.AnnotationError(path, line, "<json>", f"one JSON object per line ({e.msg})"
                                   ) from e
        yield parse_video(obj, path, line)
  except UnicodeDecodeError as e:
    raise bb.AnnotationError(path, line + 1, "<text>", f"UTF-8 JSON lines ({e.reason})") from e
  except (EOFError, gzip.BadGzipFile, OSError) as e:
    msg = f"{path}: unreadable after line {line} ({type(e).__name__}: {e}); re-download it"
    log.warning(msg)
    print(f"WARNING: {msg}", flush=True)
    stats.unreadable_shards.append(os.path.basename(path))


def read_per_video(path: str) -> Video:
  """The Video of one per-video annotation JSON (<id>.grover.json / annotations/<id>.json)."""
  name = os.path.basename(path)
  stem = name[:-len(PER_VIDEO_SUFFIX)] if name.lower().endswith(PER_VIDEO_SUFFIX) else \
      os.path.splitext(name)[0]
  return parse_video(bb.read_json(path), path, None, fallback_id=stem)


def find_annotations(lay: bb.Layout) -> tuple[list[str], list[str]]:
  """(shards, per-video JSON files) under the manual dir, sorted. A shard found both gzipped
  and not is read once, from the .gz (beside its .gz, a .jsonl may be an interrupted gunzip);
  the same shard name in two folders, once (the shallower)."""
  shards: dict[str, str] = {}
  found = [os.path.join(d, n) for d, names in lay.matching(SHARD_RX).items() for n in names]
  for path in sorted(found, key=lambda p: (not p.lower().endswith(".gz"), p.count(os.sep), p)):
    shards.setdefault(re.sub(r"(?i)\.jsonl(\.gz)?$", "", os.path.basename(path)), path)
  per_video = [os.path.join(d, n) for d, names in
               lay.matching(re.compile(r"(?i).+\.json")).items() for n in names
               if n.lower().endswith(PER_VIDEO_SUFFIX)
               or (os.path.basename(d).lower() in ANNOTATION_DIRS
                   and not n.lower().endswith(".info.json"))]
  return sorted(shards.values(), key=os.path.basename), sorted(per_video)


def _report(builder: str, config: str, stats: TextStats) -> None:
  """One line about the text side of the split, and its JSON beside the build report."""
  dropped = stats.no_text + stats.past_end
  msg = (f"{builder}/{SPLIT}: {stats.clips} clips from the videos on disk ({stats.windows} "
         f"windows: {stats.no_text} with fewer than the minimum words and {stats.past_end} after "
         f"the video's end dropped, {stats.capped} over max_clips, {stats.raw_asr} captioned "
         f"from raw ASR); {stats.annotations} annotations, {stats.no_asr} without ASR words, "
         f"{stats.duplicates} duplicate ids")
  if stats.unreadable_shards:
    msg += f"; unreadable shards: {', '.join(stats.unreadable_shards)}"
  path = bb._report_path(builder, config, SPLIT)   # pylint: disable=protected-access
  path = path[:-len(".json")] + ".captions.json"
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(dict(dataclasses.asdict(stats), dropped=dropped), f, indent=1)
    msg += f"\n  report: {path}"
  except OSError as e:
    msg += f"\n  (could not write the report to {path}: {e})"
  LAST_TEXT_REPORTS[(builder, config)] = stats
  log.info(msg)
  print(msg, flush=True)


LAST_TEXT_REPORTS: dict[tuple[str, str], TextStats] = {}


def ytdlp_names(lay: bb.Layout) -> dict[str, str]:
  """{video id: file stem} of the videos saved under yt-dlp's default name '<title> [<id>]'."""
  out: dict[str, str] = {}
  for stem in sorted(lay.videos):
    m = _YTDLP_NAME.fullmatch(stem)
    if m:
      out.setdefault(m.group(1), stem)
  return out


def records(videos: Iterable[Video], lay: bb.Layout, c: YTTemporalConfig, stats: TextStats
            ) -> Iterator[bb.VideoRecord]:
  """A record per usable window of each video on disk; one per video not on disk (so it is
  counted missing once, without reading its words)."""
  seen: set[str] = set()
  default_dir = os.path.join(lay.root, "videos")   # where the instructions put them
  titled = ytdlp_names(lay)
  for v in videos:
    stats.annotations += 1
    if v.video_id in seen:
      stats.duplicates += 1
      continue
    seen.add(v.video_id)
    if not v.times:
      stats.no_asr += 1
      continue
    path = lay.video([v.video_id, titled.get(v.video_id, v.video_id)], "")
    if not path:
      stats.missing_videos += 1
      yield bb.VideoRecord(key=f"{v.video_id}:missing",
                           fields=dict(video_id=v.video_id, captions=[]),
                           video_path=os.path.join(default_dir, f"{v.video_id}.mp4"))
      continue
    for k, start, end, text in clips(v, c, stats):
      stats.clips += 1
      yield bb.VideoRecord(key=f"{v.video_id}:{k:05d}", video_path=path, start=start, end=end,
                           fields=dict(video_id=v.video_id, captions=[text]))


class Builder(bb.VideoDatasetBuilder):
  """YT-Temporal-180M ASR windows as captioned clips (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://rowanzellers.com/merlot"
  CITATION = ("@inproceedings{zellersluhessel2021merlot, title={MERLOT: Multimodal Neural Script "
              "Knowledge Models}, author={Zellers, Rowan and Lu, Ximing and Hessel, Jack and Yu, "
              "Youngjae and Park, Jae Sung and Cao, Jize and Farhadi, Ali and Choi, Yejin}, "
              "booktitle={NeurIPS}, year={2021}}")
  BUILDER_CONFIGS = [
      YTTemporalConfig(name="default", fps=2.0, short_side=256,
                       description="10-s windows of ASR words, cleaned (denoised) captions, "
                       "2 fps, short side 256."),
      YTTemporalConfig(name="raw_asr", fps=2.0, short_side=256, text="asr",
                       description="10-s windows, raw ASR words as captions, 2 fps, short 256."),
      YTTemporalConfig(name="lite", fps=1.0, short_side=224, max_frames=16, max_clips=8,
                       description="<= 8 windows per video (evenly spread), cleaned captions, "
                       "1 fps, short side 224, <= 16 frames."),
  ]

  def _features(self):
    return bb.caption_features()

  def _split_records(self, manual_dir: str):
    c = self.builder_config
    if c.text not in ("denoised", "asr"):
      raise ValueError(f"yt_temporal/{c.name}: text={c.text!r}, expected 'denoised' or 'asr'")
    lay = bb.Layout(manual_dir, f"yt_temporal/{c.name}", video_dirs=("videos", ""),
                    video_extensions=rl.VIDEO_EXTENSIONS)
    shards, per_video = find_annotations(lay)
    if not shards and not per_video:
      return {SPLIT: rl.Missing((f"{OFFICIAL_SHARD} (the release's .jsonl[.gz] shards) or "
                                 f"<id>{PER_VIDEO_SUFFIX} / annotations/<id>.json",))}
    return {SPLIT: self._records(lay, shards, per_video)}   # streamed: millions of windows

  def _records(self, lay: bb.Layout, shards: list[str], per_video: list[str]
               ) -> Iterator[bb.VideoRecord]:
    c = self.builder_config
    stats = TextStats()

    def videos() -> Iterator[Video]:
      for shard in shards:
        yield from read_shard(shard, stats)
      for path in per_video:
        yield read_per_video(path)

    yield from records(videos(), lay, c, stats)
    _report(self.name, c.name, stats)
