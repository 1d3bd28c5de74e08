"""Reading dataset annotation files: CSV/TSV/JSON/JSONL readers and finders whose errors name the
file, line (or JSON entry) and field, so a malformed annotation stops a build before any decoding
with a message the user can act on."""
from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Any, Iterator, Mapping, Sequence

from vlx.cli import UserError


class AnnotationError(UserError, ValueError):
  """A malformed annotation file; the message names the file, line and field."""

  def __init__(self, file: str, line: int | None, field: str, expected: str):
    self.file, self.line, self.field, self.expected = str(file), line, field, expected
    where = f"{file}:{line}" if line is not None else f"{file}"
    super().__init__(f"{where}: field '{field}': expected {expected}")


def require(row: Mapping, field: str, *, file: str, line: int | None,
            expected: str = "a value") -> Any:
  """row[field], or AnnotationError when it is absent, None or empty."""
  value = row.get(field) if isinstance(row, Mapping) else None
  if value is None or (isinstance(value, str) and not value.strip()):
    raise AnnotationError(file, line, field, expected)
  return value


def _open_text(path):
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: annotation file not found")
  return open(path, encoding="utf-8-sig", newline="")


def read_csv(path, required: Sequence[str], *, delimiter: str = ",",
             fieldnames: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
  """(1-based line number, row) of a CSV/TSV with a header row (or `fieldnames` when it has none).

  A required column missing from the header or empty in a row raises AnnotationError. TSVs are
  read without quote processing (captions may contain quotes).
  """
  quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
  with _open_text(path) as f:
    reader = csv.DictReader(f, fieldnames=fieldnames, delimiter=delimiter, quoting=quoting)
    header = reader.fieldnames or []
    for field in required:
      if field not in header:
        raise AnnotationError(path, 1, field, f"a column named '{field}' in the header "
                              f"(found: {', '.join(map(str, header)) or 'no header'})")
    for row in reader:
      line = reader.line_num
      if not any((v or "").strip() for k, v in row.items() if k is not None):
        continue  # blank line
      for field in required:
        require(row, field, file=path, line=line, expected="a non-empty value")
      yield line, {k: (v if v is not None else "") for k, v in row.items() if k is not None}


def read_json(path) -> Any:
  """Parsed JSON; invalid JSON -> AnnotationError naming the file and line."""
  with _open_text(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise AnnotationError(path, e.lineno, "<json>", f"valid JSON ({e.msg}, column {e.colno})"
                          ) from e


def read_jsonl(path, required: Sequence[str]) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) per non-blank line; bad lines raise AnnotationError."""
  with _open_text(path) as f:
    for line, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        obj = json.loads(text)
      except json.JSONDecodeError as e:
        raise AnnotationError(path, line, "<json>", f"one JSON object per line ({e.msg})") from e
      if not isinstance(obj, dict):
        raise AnnotationError(path, line, "<json>", f"a JSON object, got {type(obj).__name__}")
      for field in required:
        require(obj, field, file=path, line=line, expected="a non-empty value")
      yield line, obj


def find_file(root, names: str | Sequence[str], *, folders: Sequence[str] | None = None,
              required: bool = True, builder: str = "", instructions: str = ""):
  """The first `root/<folder>/<name>` that is a file (folders outer, names inner).

  `folders=None` looks in root itself, then one folder down (sub-folders in sorted order), so an
  official archive or a paper's `data/` folder can be unpacked as it comes; '' names root. Not
  found: FileNotFoundError naming `builder`, the file and where it looked (plus `instructions`),
  or None when not `required`. Returns a pathlib.Path when root is one, else a str.
  """
  names = [names] if isinstance(names, str) else list(names)
  base = os.fspath(root)
  if folders is None:
    subs = sorted(os.listdir(base)) if os.path.isdir(base) else []
    dirs, where = ["", *subs], "nor one folder down"
  else:
    dirs = list(folders)
    where = "looked in " + ", ".join(f"{d}/" if d else "." for d in dirs)
  for folder in dirs:
    for name in names:
      path = os.path.join(base, folder, name) if folder else os.path.join(base, name)
      if os.path.isfile(path):
        return pathlib.Path(path) if isinstance(root, pathlib.PurePath) else path
  if not required:
    return None
  prefix = f"{builder}: " if builder else ""
  msg = f"{prefix}{' or '.join(names)} not found in {base} ({where})"
  if instructions:
    msg += f"; {builder or 'the builder'} expects the official layout:\n{instructions}"
  elif builder:
    msg += f"; see the {builder} builder's MANUAL_DOWNLOAD_INSTRUCTIONS"
  raise FileNotFoundError(msg)


def entry_field(entry, index: int, field: str, *, file, prefix: str = "",
                expected: str = "a value") -> Any:
  """entry[field] of the index-th entry of a JSON list; AnnotationError naming
  `<prefix>[index].field` when the entry is not an object or the field is absent / empty."""
  value = entry.get(field) if isinstance(entry, Mapping) else None
  if value is None or (isinstance(value, str) and not value.strip()):
    raise AnnotationError(file, None, f"{prefix}[{index}].{field}", expected)
  return value
