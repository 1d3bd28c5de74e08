"""Test setup: 8 simulated CPU devices (set before jax is imported) and repository paths."""
import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Subprocess runs of vlx.main (multi-process, SIGTERM tests) use the persistent compilation cache
# by default: keep it out of the user's ~/.cache, in one folder per test session.
if "VLX_COMPILATION_CACHE" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["VLX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="vlx_test_compile_cache_")

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


# XLA CPU code generation dominates the compile time of the tiny test graphs and buys nothing at
# these sizes: without LLVM optimisation and with the classic loop emitters the ALPRO training
# loss compiles ~8x faster (24 s -> 3 s), the parity run's ~2x. The HLO (the computation) is
# unchanged; results agree with the default build to float32 rounding (all 77 parity outputs
# pass either way).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


@pytest.fixture(scope="session")
def fast_compile() -> dict:
  """FAST_COMPILE for `train.train_and_evaluate(..., compiler_options=...)`."""
  return dict(FAST_COMPILE)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding moving_shapes/tiny, generated once per test session (read-only)."""
  from vlx.data.pipeline import get_builder  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"  # also used by data tests
  get_builder("moving_shapes", "tiny", str(path))
  return str(path)


def _fast_jit(fn, static_argnums: tuple[int, ...] = ()):
  """`nnx.jit`-like: fn(module, *args) compiled with FAST_COMPILE, one compile per graph structure
  (and static args). Mutations of the module inside `fn` are not written back: return what you
  need."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  cache = {}

  def wrapper(module, *args):
    graphdef, state = nnx.split(module)
    static = tuple(args[i - 1] for i in static_argnums)
    key = (graphdef, static)
    if key not in cache:
      def pure(st, *dyn):
        full = list(dyn)
        for i, v in zip(static_argnums, static):
          full.insert(i - 1, v)
        return fn(nnx.merge(graphdef, st), *full)
      cache[key] = jax.jit(pure, compiler_options=FAST_COMPILE)
    dyn = [a for i, a in enumerate(args, 1) if i not in static_argnums]
    return cache[key](state, *dyn)

  return wrapper


@pytest.fixture(scope="session")
def fast_jit():
  """Decorator: `fast_jit(fn)(module, *args)` / `fast_jit(fn, static_argnums=(k,))`; see above."""
  return _fast_jit


@pytest.fixture(scope="session")
def alpro_parity_run(reference_dir, repo_root, tmp_path_factory):
  """`python -m vlx.convert.parity --family alpro --compare` on the tiny fixture, run ONCE per test
  session (tests/test_alpro_parity.py and tests/test_parity_cli.py share it): (returncode, stdout +
  stderr, {key: array} written to --out, fixture dir)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  fixture = reference_dir / "alpro" / "tiny"
  out = tmp_path_factory.mktemp("parity") / "alpro_tiny_outputs"  # no .npz: written as named
  flags = " ".join(f"--{k}={v}" for k, v in FAST_COMPILE.items())
  env = dict(os.environ, PYTHONPATH=str(repo_root),
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}")
  proc = subprocess.run(
      [sys.executable, "-m", "vlx.convert.parity", "--family", "alpro", "--fixture", str(fixture),
       "--out", str(out), "--compare", str(fixture / "outputs.npz")],
      cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False)
  outputs = dict(np.load(out)) if out.is_file() else {}
  return proc.returncode, proc.stdout + proc.stderr, outputs, fixture


@pytest.fixture(scope="session")
def fast_build():
  """`fast_build(lambda: Module(..., rngs=nnx.Rngs(params=0)))`: the same module with the same
  initial values, its initialisers compiled as one FAST_COMPILE program instead of one eager
  kernel compile per parameter shape (a TimeSformer block: ~3-7 s eager -> <1 s)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  def build(ctor):
    graphdef = nnx.graphdef(nnx.eval_shape(ctor))
    state = jax.jit(lambda: nnx.state(ctor()), compiler_options=FAST_COMPILE)()
    return nnx.merge(graphdef, state)

  return build


@pytest.fixture(scope="session")
def own_videos(tmp_path_factory):
  """A `video_text/captions` dataset built from generated videos of 5 containers (as a user's
  folder + video_text.csv), once per session: dict(manual, data_dir, rows (video, caption,
  split), report = the val build report). Val: v5-v7 exist, clips/gone.mp4 is missing."""
  import csv  # pylint: disable=import-outside-toplevel
  from vlx.data import builder_base, pipeline, testing  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("own_videos")
  manual, data_dir = root / "MY", root / "D"
  rows = []
  for i, ext in enumerate([".mp4", ".webm", ".avi", ".mkv", ".gif", ".mp4", ".webm", ".avi"]):
    path = f"clips/v{i}{ext}"
    testing.write_video(manual / path, num_frames=12, height=36, width=48, fps=8, seed=i)
    rows.append((path, f"a square moves left {i}", "train" if i < 5 else "val"))
  rows.append(("clips/gone.mp4", "a square moves up", "val"))        # taken down: counted
  with open(manual / "video_text.csv", "w", newline="") as f:
    csv.writer(f).writerows([("video", "caption", "split"), *rows])
  with testing.environ(**{builder_base.REPORT_ENV: str(root / "reports")}):
    pipeline.build("video_text", "captions", str(data_dir), manual_dir=str(manual))
  report = builder_base.last_report("video_text", "val")
  return dict(manual=manual, data_dir=str(data_dir), rows=rows, report=report)


@pytest.fixture(scope="session")
def own_videos_alpro(own_videos, tmp_path_factory):
  """configs/alpro_pretrain.py:tiny pointed at the own-videos dataset through the ordinary data
  fields (no `own` modifier): 2 steps on its train split, then the retrieval eval on its val split
  (batch 4), once per session (tests/test_own_videos.py checks the run, tests/test_search.py
  searches its checkpoint): dict(config, workdir, out = train_and_evaluate's result)."""
  from configs import alpro_pretrain  # pylint: disable=import-outside-toplevel
  from vlx import train  # pylint: disable=import-outside-toplevel
  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = own_videos["data_dir"]
  c.data.train.update(builder="video_text", builder_config="captions", split="train")
  c.train.num_steps = 2
  (_, ev), = c.evals.items()
  ev.update(builder="video_text", builder_config="captions", split="val", batch_size=4)
  workdir = tmp_path_factory.mktemp("own_videos_alpro") / "W"
  out = train.train_and_evaluate(c, str(workdir), compiler_options=dict(FAST_COMPILE))
  return dict(config=c, workdir=workdir, out=out)
