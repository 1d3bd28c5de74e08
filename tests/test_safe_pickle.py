"""vlx.convert.safe_pickle: a whole pickled dall_e Encoder (tiny_dalle/encoder.pkl) is read into
its state dict without dall_e and without running code; crafted files are refused, nothing runs."""
import json
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from vlx.convert import safe_pickle, torch_io
from vlx.convert.__main__ import main as convert_main
from vlx.convert.errors import ConversionError, UnsafeCheckpointError


@pytest.fixture(scope="module")
def dalle_dir(reference_dir):
  return reference_dir / "violet" / "tiny_dalle"


@pytest.fixture(scope="module")
def reference_sd(dalle_dir):
  return torch_io.load_state_dict(dalle_dir / "encoder_state_dict.pt")


def _same(got: dict, want: dict) -> None:
  assert list(got) == list(want)
  for k, v in want.items():
    assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k


def test_encoder_pkl_state_dict(dalle_dir, reference_dir, reference_sd):
  """Same keys (in state_dict order, the released key set) and bit-identical tensors as the
  module's own state_dict(); torch_io.load_state_dict takes the same route."""
  assert "dall_e" not in sys.modules
  sd = safe_pickle.load_module_state_dict(dalle_dir / "encoder.pkl")
  _same(sd, reference_sd)
  manifest = json.loads((reference_dir / "violet" / "manifest_dalle_encoder.json").read_text())
  assert list(sd) == manifest["top_level_keys"]  # tiny has the release's module tree
  _same(torch_io.load_state_dict(dalle_dir / "encoder.pkl"), reference_sd)
  assert "dall_e" not in sys.modules
  root = safe_pickle.load_module(dalle_dir / "encoder.pkl")
  assert root.source_class == "dall_e.encoder.Encoder" and vars(root)["n_hid"] == 16


def _resave(root, path, monkeypatch, *, legacy: bool) -> None:
  """torch.save of a stand-in tree under the original class names (fake dall_e modules, torch.nn
  names patched for the duration of the save only)."""
  names = {cls: (cls.__module__, cls.__qualname__) for cls in safe_pickle.STAND_INS.values()}
  try:
    with monkeypatch.context() as mp:
      for name, cls in safe_pickle.STAND_INS.items():
        mod, qual = name.rsplit(".", 1)
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
          if ".".join(parts[:i]) not in sys.modules:
            mp.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        mp.setattr(sys.modules[mod], qual, cls, raising=False)
        cls.__module__, cls.__qualname__ = mod, qual
      torch.save(root, path, _use_new_zipfile_serialization=not legacy)
  finally:
    for cls, (mod, qual) in names.items():
      cls.__module__, cls.__qualname__ = mod, qual


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_resaved_module_pickle(dalle_dir, reference_sd, tmp_path, monkeypatch, legacy):
  """The legacy (pre-1.6, non-zip) torch format is read the same way."""
  path = tmp_path / "encoder.pkl"
  _resave(safe_pickle.load_module(dalle_dir / "encoder.pkl"), path, monkeypatch, legacy=legacy)
  assert zipfile.is_zipfile(path) != legacy
  assert {"dall_e.encoder.Encoder", "dall_e.utils.Conv2d"} <= safe_pickle.globals_in(path)
  _same(torch_io.load_state_dict(path), reference_sd)


# -- crafted files -----------------------------------------------------------------------------

def _unicode(s: str) -> bytes:
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b


def _payload(kind: str, marker, *, dall_e_root: bool) -> bytes:
  """A protocol-2 pickle whose loading would create `marker` (os.system / builtins.eval),
  optionally nested in the state of a dall_e Encoder (what a trojaned encoder.pkl looks like)."""
  if kind == "os.system":
    call = b"cos\nsystem\n" + _unicode(f"touch '{marker}'")
  else:
    call = b"c__builtin__\neval\n" + _unicode(f"open({str(marker)!r}, 'w').close()")
  call += b"\x85R"  # TUPLE1, REDUCE
  if not dall_e_root:
    return b"\x80\x02" + call + b"."
  # Encoder.__new__(), {'n_hid': <payload>}, BUILD
  return (b"\x80\x02cdall_e.encoder\nEncoder\n)\x81}" + _unicode("n_hid") + call + b"sb.")


def _torch_zip(path, data_pkl: bytes, template) -> None:
  """A torch.save zip: every record of `template` with data.pkl replaced."""
  with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
      data = data_pkl if info.filename.endswith("/data.pkl") else src.read(info)
      dst.writestr(info.filename, data)


def test_payload_is_live(tmp_path):
  """The crafted payloads do create their marker when unpickled naively (the tests below can
  fail); here only with the harmless eval payload, in tmp_path."""
  marker = tmp_path / "ran"
  pickle.loads(_payload("builtins.eval", marker, dall_e_root=False))
  assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("dall_e_root", [True, False], ids=["in_dall_e", "bare"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_refuses_payload(dalle_dir, tmp_path, kind, dall_e_root, fmt):
  marker = tmp_path / "pwned"
  data = _payload(kind, marker, dall_e_root=dall_e_root)
  path = tmp_path / "encoder.pkl"
  if fmt == "zip":
    _torch_zip(path, data, dalle_dir / "encoder.pkl")
  else:
    path.write_bytes(data)
  assert safe_pickle.is_module_pickle(path) == dall_e_root
  func = kind.split(".")[1]
  for load in (torch_io.load_state_dict, safe_pickle.load_module_state_dict):
    with pytest.raises(UnsafeCheckpointError, match=rf"{path}.*refused globals:.*{func}"):
      load(path)
    assert not marker.exists()


@pytest.mark.parametrize("old,new", [
    (b"dall_e.utils\nConv2d\n", b"dall_e.utils\nEvil2d\n"),  # unknown class in a dall_e module
    (b"torch.nn.modules.linear\nIdentity\n", b"torch.nn.modules.linear\nLinear\n"),  # not needed
])
def test_refuses_classes_off_the_list(dalle_dir, tmp_path, old, new):
  with zipfile.ZipFile(dalle_dir / "encoder.pkl") as z:
    data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
  assert old in data
  path = tmp_path / "encoder.pkl"
  _torch_zip(path, data.replace(old, new), dalle_dir / "encoder.pkl")
  refused = new.decode().strip().replace("\n", ".")
  with pytest.raises(UnsafeCheckpointError) as e:
    torch_io.load_state_dict(path)
  msg = str(e.value)
  assert str(path) in msg and refused in msg and "Conv2d" not in msg and "\n" not in msg


def test_cli_refuses_with_one_line(dalle_dir, tmp_path, capsys):
  marker = tmp_path / "pwned"
  path = tmp_path / "encoder.pkl"
  _torch_zip(path, _payload("os.system", marker, dall_e_root=True), dalle_dir / "encoder.pkl")
  assert convert_main(["--family", "alpro", "--checkpoint", str(path),
                       "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(path) in err and "system" in err, err
  assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("data", [
    b"\x80\x02cdall_e.encoder\nEncoder\nX\x01\x00\x00\x00x\x85R.",  # constructor call with args
    b"\x80\x02cdall_e.encoder\nEncoder\n)\x81]b.",  # BUILD with a list as state
    b"\x80\x02cdall_e.encoder\nEncoder\n)\x81}b]\x86.",  # a tuple, not a module, at the root
], ids=["reduce_args", "list_state", "tuple_root"])
def test_malformed_module_pickles_are_one_line_errors(dalle_dir, tmp_path, data):
  path = tmp_path / "encoder.pkl"
  _torch_zip(path, data, dalle_dir / "encoder.pkl")
  with pytest.raises(ConversionError, match=str(path)):
    torch_io.load_state_dict(path)
