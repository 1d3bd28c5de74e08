"""video_text: your own videos with captions or labels, from one CSV / TSV / JSONL file.

  python -m vlx.data.pipeline --builder=video_text --config=captions --manual_dir=MY --data_dir=D
then train with --config.data.train.builder=video_text --config.data.train.builder_config=captions.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
import re

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

FILE_ENV = "VLX_VIDEO_TEXT_FILE"   # path of the annotation file (overrides the config / defaults)
EXTENSIONS = (".csv", ".tsv", ".jsonl")
# Accepted column names, first = the name used in messages.
COLUMNS = {"video": ("video", "video_path", "path", "file"),
           "caption": ("caption", "captions", "text", "sentence"),
           "label": ("label", "class", "category"),
           "split": ("split",), "start": ("start",), "end": ("end",)}
_SPLIT_RE = re.compile(r"^[a-z][a-z0-9_]*$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put your videos and one annotation file in the manual dir (--manual_dir, default
<data_dir>/downloads/manual):

  MY_DIR/
    video_text.csv          (or video_text.tsv / video_text.jsonl; or per split:
                             video_text_train.csv, video_text_val.csv, ...)
    clips/cat.mp4 ...       (any layout: paths in the file are relative to the file's folder or
                             MY_DIR, or absolute; the file may sit one or two folders down)

video_text.csv (header row; UTF-8; quote captions that contain commas):
  video,caption,split
  clips/cat.mp4,a cat jumps onto a sofa,train
  clips/cat.mp4,a kitten leaps,train          <- several rows per video = several captions
  clips/dog.webm,a dog runs on a beach,val
Config `labels` reads a `label` column instead (video,label[,split]); label names are collected
from the file and sorted. Optional columns: split (default train; e.g. train / val / test),
start and end (seconds: a clip cut from a longer video). Accepted column aliases: video_path /
path / file; text / sentence; class / category. JSONL: one object per line with the same keys;
"caption" may be a list of captions. Videos: anything FFmpeg reads (mp4, webm, mkv, avi, gif, ...)
and images (jpg, png, ...) as 1-frame videos. Missing or unreadable videos are skipped and reported.
Set VLX_VIDEO_TEXT_FILE=/path/to/file.csv to use a file elsewhere.
"""


@dataclasses.dataclass
class VideoTextConfig(bb.VideoBuilderConfig):
  task: str = "captions"    # 'captions' or 'labels'
  annotations: str = ""     # annotation file (relative to manual_dir); '' = video_text.*
  audio_rate: int = 0       # > 0: also the audio track, mono int16 PCM at this rate (`audio`)


def _canonical(header: list[str], path: str, task: str, line: int = 1) -> dict[str, str]:
  """Maps canonical column names to the file's header names; required ones must be present."""
  lower = {h.strip().lower(): h for h in header if h}
  found = {}
  for name, aliases in COLUMNS.items():
    for a in aliases:
      if a in lower:
        found[name] = lower[a]
        break
  for name in ("video", "caption" if task == "captions" else "label"):
    if name not in found:
      aliases = ", ".join(COLUMNS[name][1:])
      raise bb.AnnotationError(path, line, name, f"a column named '{name}' (or {aliases}) in the "
                               f"header (found: {', '.join(header) or 'nothing'})")
  return found


def read_rows(path: str, task: str):
  """(line, {video, caption|label, split, start, end}) with canonical keys, values not checked."""
  if path.endswith(".jsonl"):
    for line, obj in bb.read_jsonl(path, []):
      cols = _canonical(list(obj), path, task, line)
      yield line, {k: obj.get(v) for k, v in cols.items()}
    return
  delimiter = "\t" if path.endswith(".tsv") else ","
  with open(path, encoding="utf-8-sig", newline="") as f:
    header = next(csv.reader(f, delimiter=delimiter), [])
  cols = _canonical(header, path, task)
  for line, row in bb.read_csv(path, [], delimiter=delimiter):
    yield line, {k: row.get(v) for k, v in cols.items()}


def _seconds(value, path: str, line: int, field: str) -> float | None:
  if value is None or (isinstance(value, str) and not value.strip()):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    raise bb.AnnotationError(path, line, field, f"seconds as a number, got {value!r}") from None


def parse(path: str, task: str, manual_dir: str, default_split: str = "train") -> dict:
  """{split: {clip: dict(video_path, texts|label, line)}} with clip = (video, start, end)."""
  value_field = "caption" if task == "captions" else "label"
  splits: dict = collections.defaultdict(dict)
  for line, row in read_rows(path, task):
    video = str(bb.require(row, "video", file=path, line=line, expected="a video path")).strip()
    value = bb.require(row, value_field, file=path, line=line,
                       expected=f"a non-empty {value_field}")
    split = str(row.get("split") or default_split).strip().lower()
    if not _SPLIT_RE.match(split):
      raise bb.AnnotationError(path, line, "split", f"a split name like train / val / test, got "
                               f"{split!r}")
    start = _seconds(row.get("start"), path, line, "start")
    end = _seconds(row.get("end"), path, line, "end")
    if start is not None and end is not None and end <= start:
      raise bb.AnnotationError(path, line, "end", f"a time after start={start}, got {end}")
    clip = (video, start, end)
    entry = splits[split].setdefault(clip, dict(video_path=video_path(video, path, manual_dir),
                                                texts=[],
                                                label=None, line=line))
    if task == "captions":
      texts = value if isinstance(value, list) else [value]
      entry["texts"].extend(str(t).strip() for t in texts if str(t).strip())
    else:
      label = str(value).strip()
      if entry["label"] not in (None, label):
        raise bb.AnnotationError(path, line, "label", f"the same label as line {entry['line']} "
                                 f"({entry['label']!r}) for the same clip, got {label!r}")
      entry["label"] = label
  return dict(splits)


def video_path(video: str, annotation_file: str, manual_dir: str) -> str:
  """A relative path resolves against the annotation file's folder, then manual_dir (the
  path reported when neither exists); absolute and ~ paths are taken as they are."""
  video = os.path.expanduser(video)
  candidates = [os.path.abspath(os.path.join(d, video))
                for d in (os.path.dirname(os.path.abspath(annotation_file)), manual_dir)]
  return next((c for c in candidates if os.path.exists(c)), candidates[-1])


def find_annotations(manual_dir: str, configured: str = "") -> dict[str, str]:
  """{'' or split: file} from, in order: VLX_VIDEO_TEXT_FILE, the config's `annotations`,
  video_text.{csv,tsv,jsonl}, video_text_<split>.{csv,tsv,jsonl}, then video_text.* one or
  two folders down (two candidates there: DatasetLayoutError naming both)."""
  explicit = os.environ.get(FILE_ENV) or configured
  if explicit:
    path = os.path.join(manual_dir, os.path.expanduser(explicit))
    if not os.path.isfile(path):
      raise FileNotFoundError(f"video_text: annotation file {path} not found (set by "
                              f"{FILE_ENV if os.environ.get(FILE_ENV) else 'the config'})")
    return {"": path}
  for ext in EXTENSIONS:
    if os.path.isfile(os.path.join(manual_dir, "video_text" + ext)):
      return {"": os.path.join(manual_dir, "video_text" + ext)}
  per_split = {}
  for name in sorted(os.listdir(manual_dir)) if os.path.isdir(manual_dir) else []:
    m = re.match(r"^video_text_([a-z][a-z0-9_]*)(\.csv|\.tsv|\.jsonl)$", name)
    if m:
      per_split[m.group(1)] = os.path.join(manual_dir, name)
  if not per_split and os.path.isdir(manual_dir):   # a folder of its own, one or two levels down
    lay = rl.Layout(manual_dir, "video_text", index_videos=False, max_depth=2)
    found = lay.find([f"video_text{ext}" for ext in EXTENSIONS])
    if found:
      return {"": found}
  if not per_split:
    raise FileNotFoundError(
        f"video_text: no annotation file in {manual_dir}: expected video_text.csv, .tsv or "
        f".jsonl (or video_text_<split>.csv ...), or {FILE_ENV}=/path/to/file.\n"
        + MANUAL_DOWNLOAD_INSTRUCTIONS)
  return per_split


def load(manual_dir: str, config: VideoTextConfig) -> dict:
  files = find_annotations(manual_dir, config.annotations)
  merged: dict = {}
  for split, path in files.items():
    for name, clips in parse(path, config.task, manual_dir, split or "train").items():
      merged.setdefault(name, {}).update(clips)
  return merged


def records(clips: dict, task: str) -> list[bb.VideoRecord]:
  """One record per clip (video, start, end) of one split."""
  out = []
  for (video, start, end), c in clips.items():
    fields = {"video_id": os.path.splitext(video)[0]}
    if task == "captions":
      fields["captions"] = c["texts"]
    else:
      fields.update(label=c["label"], label_name=c["label"])
    # Deterministic and free of local paths (TFDS orders examples by key hash).
    digest = hashlib.sha1(f"{video}|{start}|{end}".encode()).hexdigest()[:12]
    key = f"{os.path.basename(video)}-{digest}"
    out.append(bb.VideoRecord(key=key, video_path=c["video_path"], fields=fields,
                              start=start, end=end))
  return out


class Builder(bb.VideoDatasetBuilder):
  """Your own video-caption or video-label data (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/vlx (your own data)"
  BUILDER_CONFIGS = [
      VideoTextConfig(name="captions", description="video + captions; 2 fps, short side 256.",
                      task="captions", fps=2.0, short_side=256),
      VideoTextConfig(name="labels", description="video + class label; 2 fps, short side 256.",
                      task="labels", fps=2.0, short_side=256),
      VideoTextConfig(name="captions_audio", task="captions", fps=2.0, short_side=256,
                      audio_rate=16000,
                      description="video + captions + the audio track (mono 16 kHz int16 PCM, "
                                  "empty for a video without audio); 2 fps, short side 256."),
  ]

  @property
  def STREAMS(self) -> bb.Streams:  # pylint: disable=invalid-name (the base's class attribute)
    """Frames, plus the audio track in the configs with an audio_rate."""
    return bb.Streams(audio_rate=self.builder_config.audio_rate)

  def _features(self):
    # label names are set from the annotation file in _split_records
    return (bb.caption_features() if self.builder_config.task == "captions"
            else bb.classification_features())

  def _split_records(self, manual_dir: str):
    task = self.builder_config.task
    data = load(manual_dir, self.builder_config)
    if task == "labels":
      self.set_label_names(sorted({c["label"] for clips in data.values()
                                   for c in clips.values()}))
    return {split: records(clips, task) for split, clips in data.items()}
