"""`python -m vlx.convert.parity`: end to end on the ALPRO tiny fixture, plus comparison logic."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vlx import registry
from vlx.convert import parity

pytestmark = pytest.mark.torch  # the ALPRO fixture runner reads the reference .pt files


def test_cli_end_to_end_matches_reference(alpro_parity_run, repo_root, tmp_path):
  """The real `python -m` entry point on the fixture (run once per session by the conftest
  fixture, whose outputs tests/test_alpro_parity.py checks key by key)."""
  returncode, log, ours, fixture_dir = alpro_parity_run
  assert returncode == 0, log[-3000:]
  ref = np.load(fixture_dir / "outputs.npz")
  assert set(ref.files) <= set(ours)   # + the gradient norms of every other parameter
  np.testing.assert_allclose(ours["total_loss"], ref["total_loss"], rtol=1e-5)
  np.testing.assert_array_equal(ours["vtm_labels"], ref["vtm_labels"])
  assert f"{len(ref.files)} of {len(ref.files)} outputs pass" in log
  assert "grad_norm/temp" in log and "exact" in log
  # the entry point's error path: one line on stderr, exit 2 (fails before any computation)
  env = dict(os.environ, PYTHONPATH=str(repo_root))
  proc = subprocess.run(
      [sys.executable, "-m", "vlx.convert.parity", "--family", "alpro", "--fixture",
       str(fixture_dir), "--out", str(tmp_path / "o.npz"), "--compare", str(tmp_path / "no.npz")],
      cwd=repo_root, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2 and "no.npz: file not found" in proc.stderr, proc.stderr[-2000:]


def test_compare_applies_readme_tolerances():
  ref = {"vtc_loss": np.float32(1.0), "grad/temp": np.float32(10.0),
         "vtm_labels": np.array([1.0, 0.0]), "ret_metric/text2video/r1": np.float32(50.0),
         "pem_ignore_masks_img": np.array([0.0, 1.0])}
  near = {"vtc_loss": np.float32(1.00015), "grad/temp": np.float32(10.009),
          "vtm_labels": np.array([1.0, 0.0]), "ret_metric/text2video/r1": np.float32(50.0),
          "pem_ignore_masks_img": np.array([0.0, 1.0]), "extra": np.zeros(2)}
  table = parity.tolerances(registry.get("alpro"))   # the family's exact keys first
  rows, ok = parity.compare(near, ref, table)
  assert ok, rows
  assert {r["key"]: r["status"] for r in rows}["extra"] == "extra"
  for key, bad in (("vtc_loss", 1.0003), ("grad/temp", 10.02),
                   ("ret_metric/text2video/r1", 50.0001)):
    rows, ok = parity.compare(dict(near, **{key: np.float32(bad)}), ref, table)
    assert not ok and [r["key"] for r in rows if r["status"] == "FAIL"] == [key]
  rows, ok = parity.compare({k: v for k, v in near.items() if k != "grad/temp"}, ref, table)
  assert not ok and "MISSING" in parity.format_table(rows)
  rows, ok = parity.compare(dict(near, vtm_labels=np.array([1.0, 0.0, 0.0])), ref, table)
  assert not ok and "SHAPE (3,)" in parity.format_table(rows)


def test_compare_string_outputs_by_equality():
  ref = {"grad_names": np.array(["a.weight", "b.bias"])}
  rows, ok = parity.compare({"grad_names": np.array(["a.weight", "b.bias"])}, ref)
  assert ok, rows
  rows, ok = parity.compare({"grad_names": np.array(["a.weight", "c.bias"])}, ref)
  assert not ok and rows[0]["status"] == "FAIL"


def test_name_indexed_outputs_compare_by_name():
  """vlx writes grad_*_norms for every parameter, in its own order; a fixture lists the ones it
  checks: rows are matched by name, extra names are fine, a missing name or value fails."""
  ref = {"grad_x_names": np.array(["b.weight", "a.weight"]), "grad_x_norms": np.float32([2, 1]),
         "grad_x_full": np.ones((2, 3), np.float32)}
  ours = {"grad_x_names": np.array(["a.weight", "b.weight", "c.bias"]),
          "grad_x_norms": np.float32([1, 2, 3]), "grad_x_full": np.ones((2, 3), np.float32)}
  rows, ok = parity.compare(ours, ref)
  assert ok, rows
  rows, ok = parity.compare(dict(ours, grad_x_norms=np.float32([1, 2.1, 3])), ref)
  assert not ok and [r["key"] for r in rows if r["status"] == "FAIL"] == ["grad_x_norms"]
  rows, ok = parity.compare(dict(ours, grad_x_names=np.array(["a.weight", "x", "c.bias"])), ref)
  assert not ok


def test_cli_exit_codes(monkeypatch, tmp_path, capsys):
  ref = {"a": np.ones(3, np.float32), "grad/b": np.float32(2.0)}
  np.savez(tmp_path / "ref.npz", **ref)
  outputs = dict(ref)
  monkeypatch.setattr(parity, "family_runner",
                      lambda family: ((lambda d: outputs), object()))
  args = ["--family", "fake", "--fixture", str(tmp_path), "--out", str(tmp_path / "o.npz"),
          "--compare", str(tmp_path / "ref.npz")]
  assert parity.main(args) == 0
  outputs["a"] = np.full(3, 1.01, np.float32)
  assert parity.main(args) == 1
  assert "FAILED: a" in capsys.readouterr().out
  assert parity.main(args[:3] + [str(tmp_path / "missing"), *args[4:]]) == 2
  assert parity.main(args[:-1] + [str(tmp_path / "no_ref.npz")]) == 2
  assert "no_ref.npz: file not found" in capsys.readouterr().err
  monkeypatch.undo()
  assert parity.main(["--family", "nosuchfamily", "--fixture", str(tmp_path), "--out",
                      str(tmp_path / "o.npz")]) == 2
  assert "no fixture runner" in capsys.readouterr().err
