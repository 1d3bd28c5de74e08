"""Safe torch checkpoint loading: formats, wrappers, dtypes, and refusal of pickled code."""
from __future__ import annotations

import builtins
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from vlx.convert import torch_io
from vlx.convert.errors import (CheckpointNotFoundError, ConversionError, MissingTorchError,
                                UnsafeCheckpointError)

pytestmark = pytest.mark.torch  # reads/writes torch checkpoints


def _sd():
  return {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
          "a.bias": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
          "h": torch.tensor([0.25], dtype=torch.float16),
          "position_ids": torch.arange(4)[None]}


def _check(sd):
  assert sorted(sd) == ["a.bias", "a.weight", "h", "position_ids"]
  np.testing.assert_array_equal(sd["a.weight"], np.arange(6, dtype=np.float32).reshape(2, 3))
  assert sd["a.bias"].dtype == np.float32 and sd["a.bias"].tolist() == [1.5, -2.0]
  assert sd["h"].dtype == np.float32 and sd["h"].tolist() == [0.25]
  assert sd["position_ids"].dtype == np.int64


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3, "global_step": 10, "best": np.float64(0.5)},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"module": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
], ids=["flat", "lightning", "model", "deepspeed+ddp", "ddp"])
def test_formats(tmp_path, wrap):
  path = tmp_path / "ckpt.pt"
  torch.save(wrap(_sd()), path)
  _check(torch_io.load_state_dict(path))


def test_legacy_non_zip_format(tmp_path):
  path = tmp_path / "old.pt"
  torch.save(_sd(), path, _use_new_zipfile_serialization=False)
  _check(torch_io.load_state_dict(path))


class MarkerOnLoad:
  """Unpickling this calls open(marker, 'w'): it would create the marker file."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (builtins.open, (self.marker, "w"))


class ShellOnLoad:
  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class Custom:
  """An unknown (not allow-listed) class: refused even though it is harmless."""


@pytest.mark.parametrize("payload,refused", [
    (MarkerOnLoad, "io.open"), (ShellOnLoad, "system")])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, payload, refused):
  marker = tmp_path / "pwned"
  # The payload is live: a plain unpickler would create the marker (then we remove it).
  if payload is MarkerOnLoad:
    pickle.loads(pickle.dumps(payload(str(marker)))).close()
    assert marker.exists()
    marker.unlink()
  path = tmp_path / "evil.pt"
  torch.save({"w": torch.zeros(2), "x": payload(str(marker))}, path)
  with pytest.raises(UnsafeCheckpointError) as err:
    torch_io.load_state_dict(path)
  msg = str(err.value)
  assert str(path) in msg and refused in msg and "code execution" in msg
  assert not marker.exists()


def test_unknown_class_is_refused(tmp_path):
  path = tmp_path / "custom.pt"
  torch.save({"w": torch.zeros(2), "cfg": Custom()}, path)
  with pytest.raises(UnsafeCheckpointError, match=r"test_torch_io\.Custom"):
    torch_io.load_state_dict(path)


def test_missing_file_names_path(tmp_path):
  with pytest.raises(CheckpointNotFoundError, match="nope.pt"):
    torch_io.load_state_dict(tmp_path / "nope.pt")


def test_not_a_state_dict(tmp_path):
  path = tmp_path / "list.pt"
  torch.save({"weights": [torch.zeros(1)], "step": 3}, path)
  with pytest.raises(ConversionError, match=r"'weights'"):
    torch_io.load_state_dict(path)
  (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
  with pytest.raises(ConversionError, match="junk.pt"):
    torch_io.load_state_dict(tmp_path / "junk.pt")


def test_missing_torch_says_how_to_install(tmp_path, monkeypatch):
  path = tmp_path / "a.pt"
  path.write_bytes(b"x")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(MissingTorchError, match=r"pip install -e \.\[convert\]"):
    torch_io.load_state_dict(path)
