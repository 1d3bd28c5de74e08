"""On-disk cache of decoded clips: one file per (video, cut, decode settings), written atomically.

Large corpora (WebVid-10M, HowTo100M) are decoded in sharded, resumable runs
(`python -m vlx.data.extract_frames`); the TFDS build then only packs cached JPEGs. An entry is
<cache>/<fps..._short..._max...>/<h[:2]>/<h>.vlxf where h = sha1(video path | start | end):
    b"VLXF1\\n" + JSON header line {"meta": {...}, "sizes": [...], "source": {...}} + JPEG bytes.
Undecodable videos get an entry with "error" so re-runs skip them too. "source" records the
video's size and mtime: an entry is stale (recomputed) when the file changed; it is still used when
the video was deleted after extraction (the cache alone can feed the build).
"""
from __future__ import annotations

import hashlib
import json
import os

MAGIC = b"VLXF1\n"


def settings_dir(cache: str, fps: float, short_side: int, max_frames: int) -> str:
  """The cache subfolder for one set of decode settings (configs that agree share it)."""
  return os.path.join(os.path.expanduser(cache), f"fps{fps:g}_short{short_side}_max{max_frames}")


def entry_path(settings: str, video_path: str, start: float | None, end: float | None) -> str:
  digest = hashlib.sha1(f"{os.path.abspath(video_path)}|{start}|{end}".encode()).hexdigest()
  return os.path.join(settings, digest[:2], digest + ".vlxf")


def _source_stamp(video_path: str) -> dict | None:
  try:
    st = os.stat(video_path)
  except OSError:
    return None
  return dict(size=st.st_size, mtime=int(st.st_mtime))


def store(path: str, video_path: str, *, jpegs: list[bytes] | None = None,
          meta: dict | None = None, error: str | None = None) -> None:
  """Writes an entry (frames + meta, or an error) via a temp file and rename: never half-written."""
  header = dict(meta=meta or {}, sizes=[len(j) for j in jpegs or []], error=error,
                video=os.path.abspath(video_path), source=_source_stamp(video_path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(MAGIC + json.dumps(header).encode() + b"\n")
    for j in jpegs or []:
      f.write(j)
  os.replace(tmp, path)


def _header_ok(header: dict, video_path: str) -> bool:
  now = _source_stamp(video_path)
  if now is not None and header.get("source") not in (None, now):
    return False  # the video changed since extraction
  if now is None and header.get("error"):
    return False  # a failed decode of a file now missing: count it as missing
  return True


def is_fresh(path: str, video_path: str) -> bool:
  """True when a complete, up-to-date entry exists (reads only the header: cheap resume check)."""
  try:
    with open(path, "rb") as f:
      if f.read(len(MAGIC)) != MAGIC:
        return False
      return _header_ok(json.loads(f.readline()), video_path)
  except (OSError, ValueError):
    return False


def load(path: str, video_path: str) -> tuple[list[bytes], dict, str | None] | None:
  """(jpegs, meta, error) of a valid, fresh entry; None when absent, unreadable or stale."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return None
  try:
    if not data.startswith(MAGIC):
      return None
    newline = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):newline])
    sizes = header["sizes"]
    body = data[newline + 1:]
    if sum(sizes) != len(body):
      return None
  except (ValueError, KeyError, TypeError):
    return None
  if not _header_ok(header, video_path):
    return None
  jpegs, offset = [], 0
  for n in sizes:
    jpegs.append(body[offset:offset + n])
    offset += n
  return jpegs, header.get("meta", {}), header.get("error")
