"""benchmarks/profile_step.py: HLO parsing / grouping rules, and a traced tiny step whose executed
ops are found in the compiled HLO and grouped by phase (forward / backward / update) and kind."""
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import profile_step  # noqa: E402
from conftest import FAST_COMPILE  # noqa: E402
from step_time import load_config  # noqa: E402

HLO = """
%fused_computation.1 (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.9 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (p0: f32[4,4]) -> f32[4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %reduce.3 = f32[4]{0} reduce(%p0, %c), dimensions={1}, to_apply=%add
}

ENTRY %main.5 (a: f32[4,4], b: f32[4,4]) -> f32[4] {
  %a = f32[4,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %mm_fusion = f32[4,4]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_computation.1, metadata={op_name="jit(train_step)/jvp()/dot_general"}
  %transpose.7 = f32[4,4]{0,1} transpose(%mm_fusion), dimensions={1,0}, metadata={op_name="jit(train_step)/transpose(jvp())/transpose"}
  %erf_fusion = f32[4,4]{1,0} fusion(%transpose.7), kind=kLoop, calls=%fused_computation.9, metadata={op_name="jit(train_step)/jvp()/erfc"}
  ROOT %red_fusion = f32[4]{0} fusion(%erf_fusion), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(train_step)/mul"}
}
"""


def test_hlo_grouping_rules():
  instrs, comps = profile_step.parse_hlo(HLO)
  kinds = {n: profile_step.kind_of(instrs[n], comps) for n in
           ("mm_fusion", "transpose.7", "erf_fusion", "red_fusion")}
  assert kinds == {"mm_fusion": "matmul", "transpose.7": "copy/transpose",
                   "erf_fusion": "gelu(erf)", "red_fusion": "reduce"}
  phases = [profile_step.phase_of(instrs[n]["op_name"]) for n in
            ("mm_fusion", "transpose.7", "red_fusion")]
  assert phases == ["forward", "backward", "update"]


def test_traced_tiny_step_groups_its_ops(tmp_path):
  out = profile_step.profile(load_config("configs/alpro_pretrain.py:tiny"), 8, 1, str(tmp_path),
                             compiler_options=FAST_COMPILE)
  assert out["total_ms"] > 0
  assert sum(out["groups"].values()) == pytest.approx(out["total_ms"], rel=1e-3, abs=0.05)
  assert {"forward/matmul", "backward/matmul"} <= set(out["groups"])
  assert all(r["ms"] >= 0 and r["op"] for r in out["top_ops"])
