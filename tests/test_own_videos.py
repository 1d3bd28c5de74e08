"""The users' path end to end: their own videos + a CSV -> video_text -> ALPRO training and a
retrieval eval on their val split, with the same config fields as every dataset."""
import json

from configs import alpro_pretrain
from vlx import train


def test_own_videos_build_train_and_evaluate(tmp_path, own_videos, fast_compile):
  report = own_videos["report"]
  assert (report["annotated"], report["found"], report["missing"]) == (4, 3, 1)

  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = own_videos["data_dir"]
  c.data.train.update(builder="video_text", builder_config="captions", split="train")
  (name, ev), = c.evals.items()
  ev.update(builder="video_text", builder_config="captions", split="val", batch_size=4)
  out = train.train_and_evaluate(c, str(tmp_path / "W"), compiler_options=fast_compile)

  assert out[f"eval/{name}/num_videos"] == 3          # the val clips that exist
  assert 0.0 <= out[f"eval/{name}/r1"] <= 100.0
  logged = [json.loads(l) for l in open(tmp_path / "W" / "metrics.jsonl")]
  assert any("train/loss" in r for r in logged)
