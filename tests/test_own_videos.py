"""The users' path end to end: their own videos + a CSV -> video_text -> ALPRO training and a
retrieval eval on their val split, with the same config fields as every dataset."""
import csv
import json

from configs import alpro_pretrain
from vlx import train
from vlx.data import builder_base, pipeline, testing


def test_own_videos_build_train_and_evaluate(tmp_path, fast_compile):
  manual, data_dir = tmp_path / "MY", tmp_path / "D"
  rows = []
  for i, ext in enumerate([".mp4", ".webm", ".avi", ".mkv", ".gif", ".mp4", ".webm", ".avi"]):
    path = f"clips/v{i}{ext}"
    testing.write_video(manual / path, num_frames=12, height=36, width=48, fps=8, seed=i)
    rows.append((path, f"a square moves left {i}", "train" if i < 5 else "val"))
  rows.append(("clips/gone.mp4", "a square moves up", "val"))        # taken down: counted
  with open(manual / "video_text.csv", "w", newline="") as f:
    csv.writer(f).writerows([("video", "caption", "split"), *rows])
  with testing.environ(**{builder_base.REPORT_ENV: str(tmp_path / "reports")}):
    pipeline.build("video_text", "captions", str(data_dir), manual_dir=str(manual))
  report = builder_base.last_report("video_text", "val")
  assert (report["annotated"], report["found"], report["missing"]) == (4, 3, 1)

  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = str(data_dir)
  c.data.train.update(builder="video_text", builder_config="captions", split="train")
  (name, ev), = c.evals.items()
  ev.update(builder="video_text", builder_config="captions", split="val", batch_size=4)
  out = train.train_and_evaluate(c, str(tmp_path / "W"), compiler_options=fast_compile)

  assert out[f"eval/{name}/num_videos"] == 3          # the val clips that exist
  assert 0.0 <= out[f"eval/{name}/r1"] <= 100.0
  logged = [json.loads(l) for l in open(tmp_path / "W" / "metrics.jsonl")]
  assert any("train/loss" in r for r in logged)
