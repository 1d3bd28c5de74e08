"""Test helpers for release layouts: what a builder's `_split_records` finds in a manual dir laid
out as a release's archives unpack (with or without their top folder, nested, side by side),
without decoding anything. Builder tests write each layout with placeholder video files (the
layout search looks at names only) and compare `summary(...)` with the documented layout's.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Iterable, Mapping

from vlx.data import release_layout


def touch(paths: Iterable[os.PathLike | str]) -> None:
  """Placeholder files (a few bytes) at `paths`, parents created."""
  for p in paths:
    p = pathlib.Path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"placeholder")


def nest(root: os.PathLike | str, folder: str) -> pathlib.Path:
  """Moves everything in `root` into root/folder (an archive unpacked into a folder of its
  own); returns the new folder."""
  root = pathlib.Path(root)
  target = root / folder
  entries = [e for e in root.iterdir()]
  target.mkdir(parents=True)
  for e in entries:
    shutil.move(str(e), str(target / e.name))
  return target


def hoist(root: os.PathLike | str, folder: str) -> None:
  """Moves the content of root/folder up into root and removes the folder (an archive
  unpacked without its top folder)."""
  root = pathlib.Path(root)
  src = root / folder
  for e in list(src.iterdir()):
    shutil.move(str(e), str(root / e.name))
  src.rmdir()


def split_records(builder_cls, config: str | None, manual_dir: os.PathLike | str
                  ) -> dict[str, object]:
  """`builder_cls(config)._split_records(manual_dir)`: {split: records | Missing}."""
  data_dir = tempfile.mkdtemp(prefix="vlx_layout_")
  try:
    builder = builder_cls(config=config, data_dir=data_dir)
    out = builder._split_records(os.fspath(manual_dir))   # pylint: disable=protected-access
    return {s: (r if isinstance(r, release_layout.Missing) else list(r)) for s, r in out.items()}
  finally:
    shutil.rmtree(data_dir, ignore_errors=True)


def summary(builder_cls, config: str | None, manual_dir: os.PathLike | str
            ) -> dict[str, object]:
  """{split: (records, records whose video exists)} or {split: 'missing: <files>'}: what a
  layout test compares with its expectation."""
  out: dict[str, object] = {}
  for split, recs in split_records(builder_cls, config, manual_dir).items():
    if isinstance(recs, release_layout.Missing):
      out[split] = "missing: " + ", ".join(recs.files)
    else:
      out[split] = (len(recs), sum(os.path.exists(r.video_path) for r in recs))
  return out


def found_videos(records: Mapping[str, object]) -> dict[str, list[str]]:
  """{split: sorted relative-free video file names that exist} of split_records(...)."""
  return {s: sorted({os.path.basename(r.video_path) for r in recs
                     if os.path.exists(r.video_path)})
          for s, recs in records.items() if not isinstance(recs, release_layout.Missing)}
