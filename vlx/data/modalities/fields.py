"""Typed reads of a reader's ConfigDict fields, each failing with one line naming `where.<field>`.

A reader's `from_config(cfg, where)` validates every field it uses through these, so a bad
`data.train.inputs.audio.seconds` says so instead of surfacing as a TF shape error in a worker.
Unknown fields are not rejected: an input's config also carries its data block's fields
(vlx.data.modalities.make_readers).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from vlx.data.errors import DataConfigError


class Fields:
  """Reads fields of `cfg` (a ConfigDict or dict), checking type and range."""

  def __init__(self, cfg: Mapping[str, Any] | Any, where: str):
    self.cfg = cfg if cfg is not None else {}
    self.where = where

  def _get(self, name: str, default: Any) -> Any:
    value = self.cfg.get(name, default) if hasattr(self.cfg, "get") else default
    return default if value is None else value

  def error(self, name: str, msg: str) -> ValueError:
    return DataConfigError(f"{self.where}.{name}: {msg}")

  def str(self, name: str, default: str, choices: Iterable[str] | None = None) -> str:
    value = self._get(name, default)
    if not isinstance(value, str) or not value:
      raise self.error(name, f"expected a non-empty string, got {value!r}")
    if choices is not None and value not in tuple(choices):
      raise self.error(name, f"{value!r} is not one of {tuple(choices)}")
    return value

  def int(self, name: str, default: int, *, low: int | None = None) -> int:
    value = self._get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
      raise self.error(name, f"expected an integer, got {value!r}")
    if low is not None and value < low:
      raise self.error(name, f"must be >= {low}, got {value}")
    return int(value)

  def float(self, name: str, default: float, *, low: float | None = None,
            strict: bool = False) -> float:
    value = self._get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise self.error(name, f"expected a number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
      raise self.error(name, f"must be {'>' if strict else '>='} {low}, got {value}")
    return float(value)

  def bool(self, name: str, default: bool) -> bool:
    value = self._get(name, default)
    if not isinstance(value, bool):
      raise self.error(name, f"expected True or False, got {value!r}")
    return value

