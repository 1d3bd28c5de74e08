"""Test setup: 8 simulated CPU devices (set before jax is imported) and repository paths."""
import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """../shared/reference (the ground-truth fixtures); tests needing it fail loudly if absent."""
  path = SHARED / "reference"
  assert path.is_dir(), f"{path} not found: clone vlx next to shared/"
  return path
