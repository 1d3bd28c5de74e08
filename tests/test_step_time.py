"""benchmarks/step_time.py: the report's keys, XLA FLOPs, MFU from a peak file or the table."""
import json
import types

import pytest

from benchmarks import matmul_peak, peak_flops, step_time
from conftest import FAST_COMPILE

PEAK = 1e12  # FLOP/s of the fake host in the peak file


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  peak_file = tmp_path_factory.mktemp("peak") / "peak.json"
  peak_file.write_text(json.dumps({"flops_per_s": {"float32": PEAK}}))
  config = step_time.load_config("configs/alpro_pretrain.py:tiny")
  return step_time.bench(config, 8, 2, False, peak_file=str(peak_file),
                         compiler_options=FAST_COMPILE)


def test_report_keys_flops_and_mfu(report):
  for key in ("step_s", "compile_s", "params", "flops", "step_s_spread", "flops_per_s",
              "peak_flops", "mfu", "dtype", "remat"):
    assert key in report, key
  assert report["platform"] == "cpu" and report["devices"] == 8 and report["dtype"] == "float32"
  assert report["params"] > 0 and report["step_s"] > 0 and report["step_s_spread"] >= 0
  assert report["step_s_min"] <= report["step_s"] <= report["step_s_max"]
  assert report["flops"] > 0
  assert report["flops_per_s"] == pytest.approx(report["flops"] / report["step_s"], rel=1e-3)
  assert report["peak_flops"] == PEAK  # 8 CPU devices of one process share the host: counted once
  assert report["mfu"] == pytest.approx(report["flops_per_s"] / PEAK, abs=1e-4)


def test_flops_grow_with_the_batch(report):
  """Per-device FLOPs x devices: twice the batch is about twice the work (the optimizer's is fixed,
  the contrastive loss's grows faster; both are small here). Memory-only: no step timed."""
  config = step_time.load_config("configs/alpro_pretrain.py:tiny")
  double = step_time.bench(config, 16, 1, True, compiler_options=FAST_COMPILE)
  assert 1.5 < double["flops"] / report["flops"] < 2.2
  assert "step_s" not in double and double["peak_source"]


def test_compiled_flops_forms():
  one = types.SimpleNamespace(cost_analysis=lambda: {"flops": 12.0})
  listed = types.SimpleNamespace(cost_analysis=lambda: [{"flops": 7.0, "bytes accessed": 1.0}])
  missing = types.SimpleNamespace(cost_analysis=lambda: {"bytes accessed": 1.0})
  empty = types.SimpleNamespace(cost_analysis=lambda: [])
  none = types.SimpleNamespace(cost_analysis=lambda: None)

  def raises():
    raise NotImplementedError

  assert step_time.compiled_flops(one) == 12.0
  assert step_time.compiled_flops(listed) == 7.0
  for c in (missing, empty, none, types.SimpleNamespace(cost_analysis=raises)):
    assert step_time.compiled_flops(c) is None


def _devices(kind, platform="gpu", n=1):
  return [types.SimpleNamespace(device_kind=kind, platform=platform, process_index=0)] * n


def test_peak_table_follows_device_kind_and_dtype(tmp_path, monkeypatch):
  monkeypatch.setattr(matmul_peak, "default_path", lambda: tmp_path / "absent.json")

  def peak(kind, dtype, platform="gpu", n=1):
    return step_time.peak_for(_devices(kind, platform, n), dtype)[0]

  assert peak("NVIDIA H100 80GB HBM3", "bfloat16", n=8) == pytest.approx(8 * 989.4e12)
  assert peak("NVIDIA H100 80GB HBM3", "float32") == pytest.approx(66.9e12)
  assert peak("NVIDIA H100 PCIe", "bfloat16") == pytest.approx(756e12)
  assert peak("NVIDIA A100-SXM4-80GB", "float32") == pytest.approx(19.5e12)
  assert peak("TPU v5 lite", "bfloat16", "tpu", 4) == pytest.approx(4 * 197e12)
  assert peak("TPU v5", "bfloat16", "tpu") == pytest.approx(459e12)
  assert peak("TPU v4", "bfloat16", "tpu") == pytest.approx(275e12)
  assert peak("TPU v4", "float32", "tpu") is None
  assert peak("Some GPU", "bfloat16") is None
  assert peak("cpu", "float32", "cpu") is None  # no peak file, not in the table
  assert peak_flops.lookup("NVIDIA H100 NVL", "bfloat16") is None


def test_peak_file_dtype_and_errors(tmp_path):
  f = tmp_path / "p.json"
  f.write_text(json.dumps({"flops_per_s": {"float32": 2e11, "bfloat16": 1e11}}))
  cpu = _devices("cpu", "cpu", 8)
  assert step_time.peak_for(cpu, "bfloat16", str(f))[0] == 1e11
  f.write_text(json.dumps({"flops_per_s": {"float32": 2e11}}))
  assert step_time.peak_for(cpu, "bfloat16", str(f))[0] == 2e11     # CPU: float32 fallback
  assert step_time.peak_for(_devices("x"), "bfloat16", str(f))[0] is None  # not on a GPU
  assert step_time.peak_for(_devices("x", n=2), "float32", str(f))[0] == 4e11  # per device
  f.write_text("{}")
  with pytest.raises(ValueError, match="--peak_file=.*p.json"):
    step_time.peak_for(cpu, "float32", str(f))


def test_matmul_peak_writes_the_file_step_time_reads(tmp_path):
  out = tmp_path / "peak.json"
  result = matmul_peak.main(["--n", "32", "--runs", "2", "--out", str(out)])
  assert json.loads(out.read_text()) == result
  assert len(result["runs"]["float32"]) == 2 and result["flops_per_s"]["float32"] > 0
  peak, source = step_time.peak_for(_devices("cpu", "cpu"), "float32", str(out))
  assert peak == result["flops_per_s"]["float32"] and source == str(out)
