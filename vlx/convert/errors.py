"""Errors of the checkpoint converter; each message names the file or key and what was expected.

The CLI prints any `ConversionError` as one line (no traceback), so messages must stand alone.
"""
from __future__ import annotations

from vlx.cli import UserError


class ConversionError(UserError):
  """Base class: a checkpoint cannot be read or mapped onto a vlx model."""


class CheckpointNotFoundError(ConversionError, FileNotFoundError):
  """The checkpoint path does not exist."""


class UnsafeCheckpointError(ConversionError):
  """The file holds pickled objects that would need code execution to load."""


class MissingTorchError(ConversionError, ImportError):
  """torch is needed to read .pt/.ckpt files but is not installed."""


class WrongFamilyError(ConversionError):
  """The state dict does not look like a checkpoint of the requested family."""


class ShapeMismatchError(ConversionError):
  """A source tensor (after its hook) does not have the shape of its target variable."""
