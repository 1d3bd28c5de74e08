"""`vlx-tfds build` (= `python -m vlx.data.tfds_cli build`): TFDS's own build command for our
builders, without apache_beam (which the stock `tfds` command imports at start-up)."""
import subprocess
import sys

import tensorflow_datasets as tfds

from data_builders.video_text import video_text_dataset_builder as vt
from vlx.data import testing


def _run(repo_root, *args, env=None):
  return subprocess.run([sys.executable, "-m", "vlx.data.tfds_cli", *args], cwd=repo_root,
                        capture_output=True, text=True, timeout=300, env=env)


def test_build_a_manual_dataset_by_path(repo_root, tmp_path):
  manual, data = tmp_path / "manual", tmp_path / "data"
  rows = ["video,caption,split"]
  for i in range(3):
    testing.write_video(manual / f"v{i}.mp4", num_frames=4, height=32, width=40, fps=4, seed=i)
    rows.append(f"v{i}.mp4,clip {i},{'train' if i < 2 else 'val'}")
  (manual / "video_text.csv").write_text("\n".join(rows + ["gone.mp4,missing,train"]) + "\n")
  r = _run(repo_root, "build", "data_builders/video_text", "--config=captions",
           f"--manual_dir={manual}", f"--data_dir={data}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "found 2 of 3 annotated videos (1 missing" in r.stdout + r.stderr
  b = vt.Builder(config="captions", data_dir=str(data))
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 2, "val": 1}
  ex = next(iter(tfds.as_numpy(b.as_dataset(split="val"))))
  assert ex["captions"][0] == b"clip 2" and ex["video"].shape[1:] == (32, 40, 3)  # never upscaled


def test_help_lists_the_tfds_build_flags(repo_root):
  r = _run(repo_root, "build", "--help")
  assert r.returncode == 0
  for flag in ("--manual_dir", "--data_dir", "--config", "--overwrite"):
    assert flag in r.stdout, flag
