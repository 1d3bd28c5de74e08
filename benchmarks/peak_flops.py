"""Peak dense FLOP/s per chip of known accelerators, for MFU (model FLOP/s utilisation).

Sources (public spec sheets; dense figures, i.e. without 2:4 sparsity):
- NVIDIA H100 datasheet: SXM (H100 80GB HBM3; H200 has the same compute) BF16/FP16 tensor core
  989.4 TFLOP/s, FP32 66.9; PCIe BF16 756, FP32 51 (the sheet prints sparse figures, 2x these).
- NVIDIA A100 datasheet: BF16/FP16 tensor core 312 TFLOP/s, FP32 19.5.
- Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e):
  peak bf16 per chip v4 275 TFLOP/s, v5e 197, v5p 459, v6e (Trillium) 918.
Caveats: JAX's default matmul precision may run float32 dots as TF32 (GPU) or bf16 passes (TPU), so
a float32 MFU against the FP32 figure can exceed 1 on GPUs; TPUs have no float32 figure here (None).
"""
from __future__ import annotations

# (substring of jax.devices()[0].device_kind, lower case; first match wins) -> {dtype: TFLOP/s}
_H100_SXM = {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}
TABLE: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0}),
    ("h100 nvl", {}),                        # other clocks: unknown rather than wrong
    ("h100", _H100_SXM),
    ("h200", _H100_SXM),
    ("a100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}),
    ("tpu v4", {"bfloat16": 275.0}),
    ("tpu v5 lite", {"bfloat16": 197.0}),   # v5e reports "TPU v5 lite"
    ("tpu v5e", {"bfloat16": 197.0}),
    ("tpu v5", {"bfloat16": 459.0}),        # v5p reports "TPU v5" (or "TPU v5p")
    ("tpu v6 lite", {"bfloat16": 918.0}),   # v6e (Trillium)
    ("tpu v6e", {"bfloat16": 918.0}),
)


def lookup(device_kind: str, dtype: str) -> float | None:
  """Peak FLOP/s of one chip of `device_kind` computing in `dtype`, or None when unknown."""
  kind = device_kind.lower()
  for key, peaks in TABLE:
    if key in kind:
      tflops = peaks.get(str(dtype))
      return None if tflops is None else tflops * 1e12
  return None
