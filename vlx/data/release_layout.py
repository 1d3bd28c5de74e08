"""Finding a dataset's annotation files and videos wherever its release archives put them.

Users unpack official archives with or without their top folder, side by side, or inside a
folder of their own (`MSRVTT/videos/all/`, `msrvtt_data/`, HMDB51's class folders at the top of
the manual dir ...). A `Layout` walks the manual dir once per build, a few folder levels deep,
and answers "where is MSRVTT_train.9k.csv" and "where is video123" from that index: the
documented place wins, a file found elsewhere is used, and two equally good candidates are an
error naming both. A split whose files are absent is reported (`Missing`) instead of failing the
whole build; the builder base warns about it and builds the others.
"""
from __future__ import annotations

import dataclasses
import filecmp
import logging
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

from vlx.cli import UserError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".flv")
MAX_DEPTH = 5            # folder levels below the manual dir that are searched
_BIG_DIR = 5000          # entries: a folder this large holds media (+ sidecars), not annotations
_SKIP_DIRS = ("__MACOSX",)
_MEDIA = {*VIDEO_EXTENSIONS, ".gif", ".jpg", ".jpeg", ".png", ".webp", ".mpg", ".mpeg", ".3gp",
          ".wmv", ".ogv"}


class DatasetLayoutError(UserError, ValueError):
  """The manual dir does not hold what a build needs: no annotation file for any split, a split
  none of whose videos is there, or two equally good candidates for one file. The message is one
  line naming the builder, where it looked and what it expected (CLIs print it and exit 2)."""


class FilesMissing(DatasetLayoutError):
  """Files a split needs are not under the manual dir (`files`: the names it looked for)."""

  def __init__(self, builder: str, root: str, files: Sequence[str]):
    self.builder, self.root, self.files = builder, root, list(files)
    super().__init__(f"{builder}: {', '.join(self.files)} not found under {root} "
                     f"(searched {MAX_DEPTH} folder levels)")


@dataclasses.dataclass(frozen=True)
class Missing:
  """A split that cannot be built: the files it needs (in place of its records)."""
  files: tuple[str, ...]


def _rel_dir(rel: str) -> str:
  d = os.path.dirname(rel)
  return d.replace(os.sep, "/")


def _depth(rel: str) -> int:
  d = _rel_dir(rel)
  return 0 if not d else d.count("/") + 1


def _folder_rank(rel: str, prefer: Sequence[str]) -> int:
  """Index of the first preferred folder `rel` sits in: the folder itself ('' = the manual dir)
  or the folder inside any others (an archive unpacked into a folder of its own); else
  len(prefer)."""
  d = _rel_dir(rel).lower()
  for i, folder in enumerate(prefer):
    f = folder.strip("/").lower()
    if d == f or (f and d.endswith("/" + f)):
      return i
  return len(prefer)


class Layout:
  """One walk of `root` (MAX_DEPTH levels; symlinks followed once): file names -> paths,
  folder names -> paths and, with `index_videos`, video stems -> paths.

  `builder` names the dataset in messages ('msrvtt/retrieval'); `video_dirs` are the documented
  video folders (a candidate inside one wins over others); `video_extensions` are matched in any
  case. In folders with more than 5000 entries, files named like a media file with another
  extension (img2dataset / video2dataset sidecars) are not indexed; folders named in `skip` are
  listed but not entered (a 10M-file video tree a builder reads its own way).
  """

  def __init__(self, root, builder: str, *, video_dirs: Sequence[str] = (),
               video_extensions: Sequence[str] = VIDEO_EXTENSIONS, index_videos: bool = True,
               max_depth: int = MAX_DEPTH, skip: Sequence[str] = ()):
    self.root = os.path.abspath(os.fspath(root))
    self.builder = builder
    self.video_dirs = tuple(video_dirs)
    self.extensions = tuple(e.lower() for e in video_extensions)
    self.files: dict[str, list[str]] = {}    # lower-case file name -> rel paths
    self.dirs: dict[str, list[str]] = {}     # lower-case folder name -> rel paths
    self.videos: dict[str, list[str]] = {}   # stem (case kept) -> rel paths
    self._skip = {d.lower() for d in skip}
    self._walk(index_videos, max_depth)

  # ------------------------------------------------------------------------------------ walking

  def _walk(self, index_videos: bool, max_depth: int) -> None:
    exts = set(self.extensions)
    seen = set()
    stack = [("", 0)]
    while stack:
      rel, depth = stack.pop()
      path = os.path.join(self.root, rel) if rel else self.root
      real = os.path.realpath(path)
      if real in seen:
        continue
      seen.add(real)
      try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
      except OSError:
        continue
      # A big folder holds media; of its other files only those that are not a media file's
      # sidecar (img2dataset / video2dataset <key>.json / .txt) can be annotation files.
      media = ({os.path.splitext(e.name)[0] for e in entries
                if os.path.splitext(e.name)[1].lower() in _MEDIA}
               if len(entries) > _BIG_DIR else set())
      subdirs = []
      for e in entries:
        child = f"{rel}/{e.name}" if rel else e.name
        try:
          is_dir = e.is_dir()
        except OSError:
          continue
        if is_dir:
          if e.name.startswith(".") or e.name in _SKIP_DIRS:
            continue
          self.dirs.setdefault(e.name.lower(), []).append(child)
          if depth < max_depth and e.name.lower() not in self._skip:
            subdirs.append((child, depth + 1))
          continue
        stem, ext = os.path.splitext(e.name)
        if index_videos and ext.lower() in exts:
          self.videos.setdefault(stem, []).append(child)
        elif stem not in media:
          self.files.setdefault(e.name.lower(), []).append(child)
      stack.extend(reversed(subdirs))

  def path(self, rel: str) -> str:
    return os.path.join(self.root, rel)

  # ------------------------------------------------------------------------------------ files

  def _best(self, kind: str, candidates: list[str], prefer: Sequence[str]) -> str | None:
    if not candidates:
      return None
    ranked = sorted(candidates, key=lambda r: (_folder_rank(r, prefer), _depth(r), r))
    best = ranked[0]
    key = (_folder_rank(best, prefer), _depth(best))
    for other in ranked[1:]:
      if (_folder_rank(other, prefer), _depth(other)) != key:
        break
      if kind == "file" and filecmp.cmp(self.path(best), self.path(other), shallow=False):
        continue   # the same file unpacked twice
      raise DatasetLayoutError(
          f"{self.builder}: two candidates for {os.path.basename(best)} under {self.root}: "
          f"{best} and {other}; remove or rename one (documented place: "
          f"{', '.join(p or '.' for p in prefer) or '.'})")
    return self.path(best)

  def find(self, names: str | Sequence[str], prefer: Sequence[str] = ("",)) -> str | None:
    """Absolute path of the file named one of `names` (any case; names in order of
    preference) anywhere under root, or None. Among several, one inside the first `prefer`
    folder wins, then the shallowest; two equally good different files raise
    DatasetLayoutError naming both."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
      found = self._best("file", self.files.get(name.lower(), []), prefer)
      if found:
        return found
    return None

  def require(self, names: str | Sequence[str], prefer: Sequence[str] = ("",)) -> str:
    """find(), or FilesMissing naming the first name (the documented one)."""
    found = self.find(names, prefer)
    if found is None:
      names = [names] if isinstance(names, str) else list(names)
      raise FilesMissing(self.builder, self.root, [" or ".join(names)])
    return found

  def find_dir(self, names: str | Sequence[str], prefer: Sequence[str] = ("",)) -> str | None:
    """Absolute path of the folder named one of `names` (any case), as find() ranks them."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
      found = self._best("dir", self.dirs.get(name.lower(), []), prefer)
      if found:
        return found
    return None

  def matching(self, pattern: str | re.Pattern) -> dict[str, list[str]]:
    """{folder (absolute): [file names]} of the files whose name fully matches `pattern`."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    out: dict[str, list[str]] = {}
    for rels in self.files.values():
      for rel in rels:
        name = os.path.basename(rel)
        if rx.fullmatch(name):
          out.setdefault(os.path.dirname(self.path(rel)), []).append(name)
    return {d: sorted(v) for d, v in sorted(out.items())}

  def one_folder(self, pattern: str | re.Pattern, prefer: Sequence[str] = ("",)) -> str | None:
    """The folder holding the files that match `pattern` (a split-file folder), ranked as
    find() ranks files; None when no file matches."""
    folders = self.matching(pattern)
    if not folders:
      return None
    reps = [os.path.relpath(os.path.join(d, names[0]), self.root) for d, names in folders.items()]
    return os.path.dirname(self._best("dir", reps, prefer))

  # ------------------------------------------------------------------------------------ videos

  def video(self, names: str | Sequence[str], default: str) -> str:
    """Absolute path of the video whose file stem is one of `names` (tried in order), in any
    folder and with any of the extensions; `default` (where the documentation puts it: the
    path a build reports as missing) when there is none. Several copies: one in the first
    documented video folder wins, then the shallowest, then the extension order."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
      rels = self.videos.get(name)
      if rels:
        if len(rels) == 1:
          return self.path(rels[0])
        ext_rank = {e: i for i, e in enumerate(self.extensions)}
        best = min(rels, key=lambda r: (_folder_rank(r, self.video_dirs), _depth(r),
                                        ext_rank.get(os.path.splitext(r)[1].lower(), 99), r))
        return self.path(best)
    return default


# ---------------------------------------------------------------------------------- split helper

def per_split(splits: Iterable[str], records: Callable[[str], object]) -> dict[str, object]:
  """{split: records(split)}, or Missing(files) for a split whose records() raised
  FilesMissing: what VideoDatasetBuilder._split_records returns."""
  out: dict[str, object] = {}
  for split in splits:
    try:
      out[split] = records(split)
    except FilesMissing as e:
      out[split] = Missing(tuple(e.files))
  return out


def buildable(splits: Mapping[str, object], builder: str, root: str) -> dict[str, object]:
  """The splits that have records; warns (one line) about the others and the files they need;
  DatasetLayoutError when none is left."""
  ready = {s: r for s, r in splits.items() if not isinstance(r, Missing)}
  missing = {s: r.files for s, r in splits.items() if isinstance(r, Missing)}
  if missing and ready:
    msg = (f"{builder}: building {', '.join(ready)}; not building "
           + "; ".join(f"{s} (needs {', '.join(f)})" for s, f in missing.items())
           + f": not found under {root} (add them and rebuild with --overwrite to get those "
           "splits too)")
    log.warning(msg)
    print(f"WARNING: {msg}", flush=True)
  if not ready:
    files = list(dict.fromkeys(f for fs in missing.values() for f in fs))
    raise DatasetLayoutError(
        f"{builder}: no split can be built from {root}: {', '.join(files) or 'nothing'} not "
        f"found (searched {MAX_DEPTH} folder levels); see the builder's "
        "MANUAL_DOWNLOAD_INSTRUCTIONS")
  return ready


def empty_split_message(builder: str, split: str, root: str, annotated: int, example: str,
                        corrupt: int = 0, error: str = "") -> str:
  """The one line for a split that ends up with no example."""
  if annotated == 0:
    return f"{builder}/{split}: the annotation lists no video for this split (manual dir {root})"
  if corrupt and error:
    return (f"{builder}/{split}: none of the {annotated} annotated videos could be decoded "
            f"({corrupt} found, all undecodable), e.g. {error}")
  return (f"{builder}/{split}: none of the {annotated} annotated videos found under {root} "
          f"(searched {MAX_DEPTH} folder levels for <id>{'/'.join(VIDEO_EXTENSIONS)}); "
          f"e.g. tried {example}")


def check_videos_present(splits: Mapping[str, object], builder: str, root: str) -> None:
  """Fails before any decoding when a split given as a list has no existing video (a wrong
  manual dir costs one line, not hours of decoding the other splits)."""
  for split, records in splits.items():
    if not isinstance(records, (list, tuple)):
      continue   # streamed: checked when built
    paths = list(dict.fromkeys(r.video_path for r in records))
    if not paths or not any(os.path.exists(p) for p in paths):
      raise DatasetLayoutError(empty_split_message(builder, split, root, len(paths),
                                                   paths[0] if paths else ""))
