"""HowTo100M pre-computed features for Everything-at-Once pre-training (spec.md section 4): per video
the 2D (ResNet-152, 1/s) and 3D (ResNeXt-101, 1.5/s) feature sequences, the log-mel spectrogram
(40 bins, 100 frames/s) and the ASR caption segments. One example per video; the clips are cut at
training time (task 'asr_clips', vlx.data.asr_clips), new ones every epoch as the reference does.

Features of an example (the names of the released MSR-VTT / YouCook2 feature builders,
vlx.data.feature_pickles): features_2d float32 [N, dim_2d], features_3d float32 [M, dim_3d] (configs
's3d': features_3d only, 1024-d at 1/s; 'clip': features_2d only, 512-d), audio float32 [n, 40]
(time first; absent in config 'no_audio'), asr Sequence({start, end, text}),
path (the video's relative folder from the video list, '' without one), plus the common
video_id, duration (seconds: spectrogram frames / 100, or the longer feature sequence without
audio), start = end = -1 and orig_fps = 0.

Items that cannot be used are skipped and counted ("found N of M listed videos ..." and the JSON
build report of vlx.data.builder_base): a listed video without a caption entry or without one of
its files is missing; a file that cannot be read or has the wrong shape is corrupt.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pickle
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders.howto100m import howto100m_dataset_builder as howto100m
from vlx.data import builder_base as bb
from vlx.data import release_layout as rl
from vlx.data import safe_numpy_pickle

CAPTION_FILES = ("caption.pickle", "caption.json")   # in order of preference
VIDEO_LISTS = ("HowTo100M_1166_videopaths.txt", "HowTo100M_v1.csv")
FEATURE_EXTENSIONS = (".npz", ".npy")
DIR_2D = ("feature_2d", "features_2d", "2d")   # folders whose plain <video_id>.npy is a 2D file
DIR_3D = ("feature_3d", "features_3d", "3d")
MEL_BINS = 40
MEL_RATE = 100.0   # spectrogram frames per second (16 kHz, hop 160)
_WINDOW = 64       # videos read concurrently

MANUAL_DOWNLOAD_INSTRUCTIONS = """
HowTo100M features as the Everything-at-Once / AVLnet training reads them
(https://github.com/roudimit/AVLnet/blob/main/training.md):
  - 2D features (ResNet-152, 1 per second) and 3D features (ResNeXt-101, 1.5 per second) extracted
    with https://github.com/antoine77340/video_feature_extractor, stored per video as
    <video_id>_2d.npz / <video_id>_3d.npz (key 'features', [N, 2048]); a 3D file may also be
    <video_id>.npz, and .npy files work too (plain <video_id>.npy inside a folder named
    feature_2d / feature_3d, the HowTo100M repository's defaults);
  - spectrograms: <video_id>_spec.npz (key 'arr_0', log-mel [40, n], 100 frames per second of
    16 kHz audio; AVLnet's audio_to_spectrograms.py, half precision is fine);
  - ASR captions: caption.pickle ({video_id: {'start': [...], 'end': [...], 'text': [...]}}, read
    without executing pickled code: only containers and numpy arrays) or HowTo100M's caption.json
    (same structure);
  - optional video list: HowTo100M_1166_videopaths.txt (one column `path`:
    <category>/<subfolder>/<video_id>, the list the authors trained on) or HowTo100M_v1.csv
    (column video_id). Without a list every video of the caption file is listed.
Layout: any folders under MANUAL_DIR (AVLnet's <category>/<subfolder>/<video_id>/ tree or flat
folders); files are found by name up to 8 levels down. With the 1166-video list the csv's
`path` column selects the folder when a video id has copies in several folders.
"""


@dataclasses.dataclass
class FeaturesConfig(bb.VideoBuilderConfig):
  parts: tuple = ("2d", "3d")   # the video feature files required and stored
  dim_2d: int = 2048
  dim_3d: int = 2048
  rate_2d: float = 1.0      # steps per second (duration without audio)
  rate_3d: float = 1.5
  audio: bool = True        # spectrograms required and stored


class Builder(bb.VideoDatasetBuilder):
  """HowTo100M 2D / 3D features + ASR + spectrograms, one example per video."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = howto100m.Builder.HOMEPAGE
  CITATION = howto100m.Builder.CITATION
  STREAMS = bb.Streams(frames=False)
  BUILDER_CONFIGS = [
      FeaturesConfig(name="default", description="2D + 3D features (2048 each), spectrograms, ASR."),
      FeaturesConfig(name="no_audio", audio=False,
                     description="2D + 3D features and ASR; no spectrograms needed."),
      FeaturesConfig(name="s3d", parts=("3d",), dim_3d=1024, rate_3d=1.0,
                     description="S3D features only (1024, 1 per second) as <id>_3d files, "
                                 "spectrograms, ASR (the reference's S3D variant)."),
      FeaturesConfig(name="clip", parts=("2d",), dim_2d=512,
                     description="CLIP ViT-B/32 image features only (512, 1 per second) as "
                                 "<id>_2d files, spectrograms, ASR (the CLIP variant)."),
      FeaturesConfig(name="tiny", dim_2d=8, dim_3d=8,
                     description="Feature size 8 (synthetic test releases)."),
  ]

  def _features(self):
    c = self.builder_config
    out = {f"features_{p}": tfds.features.Tensor(shape=(None, _dim(c, p)), dtype=np.float32)
           for p in c.parts}
    out.update(
        asr=tfds.features.Sequence({"start": np.float32, "end": np.float32,
                                    "text": tfds.features.Text()}),
        path=tfds.features.Text())
    if c.audio:
      out["audio"] = tfds.features.Tensor(shape=(None, MEL_BINS), dtype=np.float32,
                                          doc="log-mel [frames, 40], 100 frames per second")
    return out

  def _split_records(self, manual_dir: str):
    lay = bb.Layout(manual_dir, f"howto100m_features/{self.builder_config.name}",
                    video_extensions=FEATURE_EXTENSIONS, max_depth=8)
    if lay.find(CAPTION_FILES) is None:
      return {"train": rl.Missing((" or ".join(CAPTION_FILES),))}
    return {"train": _Items(lay)}

  def _generate_examples(self, split, records, where=""):
    yield from _examples(records, self.builder_config, builder=self.name, split=split,
                         where=where)


@dataclasses.dataclass(frozen=True)
class Item:
  """One listed video and its files ('' = not found)."""
  video_id: str
  path: str
  file_2d: str
  file_3d: str
  file_audio: str
  segments: tuple | None   # (start, end, text) arrays; None = no caption entry


class _Items:
  """The listed videos of a layout (iterated when the split is built)."""

  def __init__(self, lay: bb.Layout):
    self.lay = lay

  def __iter__(self):
    lay = self.lay
    captions_path = lay.require(CAPTION_FILES)
    captions = read_captions(captions_path)
    files = _index_files(lay)
    for vid, rel in _video_list(lay, captions):
      entry = captions.get(vid)
      segs = caption_segments(entry, captions_path, vid) if entry is not None else None
      yield Item(vid, rel, *(_pick(files.get((vid, kind), []), rel, lay.root)
                             for kind in ("2d", "3d", "audio")), segs)


def read_captions(path: str) -> dict:
  """{video_id: entry} of caption.pickle (numpy-safe) or caption.json."""
  if path.lower().endswith(".json"):
    captions = bb.read_json(path)
  else:
    try:
      captions = safe_numpy_pickle.load(path)
    except safe_numpy_pickle.UnsafePickleError as e:
      raise bb.AnnotationError(path, None, "<pickle>", f"containers and numpy arrays ({e})")
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:  # damaged
      raise bb.AnnotationError(path, None, "<pickle>", f"a readable pickle ({e})")
  if not isinstance(captions, dict):
    raise bb.AnnotationError(path, None, "<captions>", "a dict keyed by video_id")
  return captions


def caption_segments(entry, path: str, video_id: str) -> tuple[np.ndarray, np.ndarray, list]:
  """(start float32 [K], end float32 [K], texts) of one caption entry, in the file's order (the
  reference's searchsorted assumes starts ascending, as HowTo100M's are)."""
  if not isinstance(entry, dict):
    raise bb.AnnotationError(path, None, video_id, "a dict with start, end and text")
  start, end, text = (bb.require(entry, k, file=path, line=None,
                                 expected=f"a sequence in entry {video_id!r}")
                      for k in ("start", "end", "text"))
  try:
    start, end = (np.asarray(x, np.float64).reshape(-1) for x in (start, end))
  except (TypeError, ValueError):
    raise bb.AnnotationError(path, None, f"{video_id}.start", "numbers") from None
  texts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
           for x in np.asarray(text, object).reshape(-1)]
  if not len(start) == len(end) == len(texts):
    raise bb.AnnotationError(path, None, video_id, "start, end and text of equal length")
  return start.astype(np.float32), end.astype(np.float32), texts


def _video_list(lay: bb.Layout, captions: dict):
  """(video_id, relative folder) of the listed videos, in list order (each once)."""
  listed = lay.find(VIDEO_LISTS)
  seen = set()
  if listed is None:
    rows = ((str(v), "") for v in captions)
  elif os.path.basename(listed).lower() == VIDEO_LISTS[0].lower():
    rows = ((r["path"].strip().replace("None/", "").rstrip("/").split("/")[-1],
             r["path"].strip().replace("None/", "").rstrip("/"))
            for _, r in bb.read_csv(listed, ["path"]))
  else:
    rows = ((r["video_id"].strip(), "") for _, r in bb.read_csv(listed, ["video_id"]))
  for vid, rel in rows:
    if vid and vid not in seen:
      seen.add(vid)
      yield vid, rel


def _kind(stem: str, rel: str) -> tuple[str, str]:
  """(video_id, '2d' | '3d' | 'audio') of a feature file by its name (and folder)."""
  for suffix, kind in (("_2d", "2d"), ("_3d", "3d"), ("_spec", "audio")):
    if stem.endswith(suffix):
      return stem[: -len(suffix)], kind
  folders = {f.lower() for f in rel.split("/")[:-1]}
  return stem, "2d" if folders & set(DIR_2D) else "3d"   # AVLnet's 3D fallback <video_id>.npz


def _index_files(lay: bb.Layout) -> dict[tuple[str, str], list[str]]:
  out: dict[tuple[str, str], list[str]] = {}
  for stem, rels in lay.videos.items():
    for rel in rels:
      out.setdefault(_kind(stem, rel), []).append(rel)
  return out


def _pick(rels: list[str], folder: str, root: str) -> str:
  """The file among `rels` inside the listed folder, else the shallowest; '' when none."""
  if not rels:
    return ""
  inside = [r for r in rels if folder and f"/{folder}/" in f"/{r}"]
  named = [r for r in rels if not os.path.splitext(r)[0].endswith(("_2d", "_3d", "_spec"))]
  best = sorted(inside or rels, key=lambda r: (r in named, r.count("/"), r))[0]
  return os.path.join(root, best)


def load_array(path: str, keys: tuple[str, ...]) -> np.ndarray:
  """The array of a .npy, or of a .npz under one of `keys` (else its only array); never
  unpickles. MediaError-like ValueError on anything unreadable."""
  try:
    if path.lower().endswith(".npz"):
      with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        key = next((k for k in keys if k in names), names[0] if len(names) == 1 else None)
        if key is None:
          raise ValueError(f"no array named {' or '.join(keys)} (has {names})")
        return np.asarray(z[key])
    return np.asarray(np.load(path, allow_pickle=False))
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: cannot read ({e})") from None


def _dim(c: FeaturesConfig, part: str) -> int:
  return c.dim_2d if part == "2d" else c.dim_3d


def read_item(item: Item, config: FeaturesConfig) -> tuple[str, object]:
  """('ok', example) | ('missing', what) | ('corrupt', message) of one listed video."""
  files = {"2d": item.file_2d, "3d": item.file_3d}
  needed = [(p, files[p]) for p in config.parts]
  if config.audio:
    needed.append(("spectrogram", item.file_audio))
  absent = [k for k, f in needed if not f]
  if item.segments is None:
    absent.append("caption entry")
  if absent:
    return "missing", f"{item.video_id} ({', '.join(absent)})"
  out = {}
  try:
    for part in config.parts:
      key, path, dim = f"features_{part}", files[part], _dim(config, part)
      x = load_array(path, ("features",))
      if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{path}: features of shape {x.shape}, expected [N, {dim}]")
      out[key] = x.astype(np.float32)
    if config.audio:
      mel = load_array(item.file_audio, ("arr_0", "spec", "features"))
      if mel.ndim != 2 or MEL_BINS not in mel.shape:
        raise ValueError(f"{item.file_audio}: spectrogram of shape {mel.shape}, expected "
                         f"[{MEL_BINS}, n]")
      out["audio"] = (mel.T if mel.shape[0] == MEL_BINS else mel).astype(np.float32)
  except ValueError as e:
    return "corrupt", str(e)
  if not all(np.isfinite(v).all() for v in out.values()):
    return "corrupt", f"{item.video_id}: non-finite values in its features"
  start, end, texts = item.segments
  if "audio" in out:
    duration = len(out["audio"]) / MEL_RATE
  else:
    rates = {"2d": config.rate_2d, "3d": config.rate_3d}
    duration = max(len(out[f"features_{p}"]) / rates[p] for p in config.parts)
  out.update(asr=dict(start=start, end=end, text=texts), path=item.path, video_id=item.video_id,
             duration=float(duration), orig_fps=0.0, start=-1.0, end=-1.0)
  return "ok", out


def _examples(items, config: FeaturesConfig, *, builder: str, split: str, where: str):
  """(video_id, example) per usable item, read `_WINDOW` at a time in threads; counts the rest."""
  tally = bb._Tally()   # pylint: disable=protected-access (the shared report of every builder)
  it = iter(items)
  with concurrent.futures.ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
    while True:
      window = [x for _, x in zip(range(_WINDOW), it)]
      if not window:
        break
      for item, (status, payload) in zip(window, pool.map(lambda x: read_item(x, config),
                                                          window)):
        tally.add(item.video_id, status, ([], {}, False) if status == "ok" else payload)
        if status == "ok":
          yield item.video_id, payload
  report = tally.report(builder=builder, config=config.name, split=split, seconds=0.0)
  bb._finish_report(report)   # pylint: disable=protected-access
  if not report["examples"]:
    raise bb.DatasetLayoutError(rl.empty_split_message(
        f"{builder}/{config.name}", split, where or "the manual dir", report["annotated"],
        "<video_id>_2d.npz", report["corrupt"], (report["corrupt_errors"] or [""])[0]))
