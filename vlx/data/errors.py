"""The data package's user error: a config field or dataset content that cannot work."""
from __future__ import annotations

from vlx.cli import UserError


class DataConfigError(UserError, ValueError):
  """Names the config field (config.data.train.*, evals.<name>.*) or the dataset and what was
  expected; commands print it as one line and exit 2 (a ValueError for older callers)."""
