"""The users' path end to end: their own videos + a CSV -> video_text -> ALPRO training and a
retrieval eval on their val split, with the same config fields as every dataset."""
import importlib
import importlib.util
import json

import numpy as np
import pytest

from vlx import registry, train


def test_own_videos_build_train_and_evaluate(own_videos, own_videos_alpro):
  """conftest's own_videos_alpro run: alpro_pretrain:tiny on the built video_text dataset with
  the ordinary data fields (its checkpoint is also tests/test_search.py's)."""
  report = own_videos["report"]
  assert (report["annotated"], report["found"], report["missing"]) == (4, 3, 1)
  c, out = own_videos_alpro["config"], own_videos_alpro["out"]
  (name, _), = c.evals.items()
  assert out[f"eval/{name}/num_videos"] == 3          # the val clips that exist
  assert 0.0 <= out[f"eval/{name}/r1"] <= 100.0
  logged = [json.loads(l) for l in open(own_videos_alpro["workdir"] / "metrics.jsonl")]
  assert any("train/loss" in r for r in logged)


# every registered family's MSRVTT retrieval config (the family's retrieval recipe)
RETRIEVAL_CONFIGS = [f"{f}_msrvtt_ret" for f in registry.available()
                     if importlib.util.find_spec(f"configs.{f}_msrvtt_ret") is not None]


# alpro_msrvtt_ret:tiny,own trains and evaluates (the same checks) in
# tests/test_readme_own_videos.py::test_paper_block_commands, the README's fine-tune line.
RUN_HERE = [m for m in RETRIEVAL_CONFIGS if m != "alpro_msrvtt_ret"]


def test_every_family_with_a_retrieval_config_is_covered():
  assert {"alpro_msrvtt_ret", "allinone_msrvtt_ret", "violet_msrvtt_ret"} <= set(
      RETRIEVAL_CONFIGS)


@pytest.mark.parametrize("config_module", RUN_HERE)
def test_own_modifier_trains_and_evaluates_every_family(tmp_path, own_videos, fast_compile,
                                                        config_module):
  """`:tiny,own` of each family's retrieval config: train split trains, val split evaluates,
  under the eval names the modifier gives (video_text[_<mode>])."""
  c = importlib.import_module(f"configs.{config_module}").get_config("tiny,own")
  assert (c.data.train.builder, c.data.train.builder_config, c.data.train.split) == (
      "video_text", "captions", "train")
  assert all(e.builder == "video_text" and e.split == "val" for e in c.evals.values())
  c.data.data_dir = own_videos["data_dir"]
  out = train.train_and_evaluate(c, str(tmp_path / "W"), compiler_options=fast_compile)
  for name in c.evals:
    assert name.startswith("video_text")
    assert out[f"eval/{name}/num_videos"] == 3          # the val clips that exist
    assert out[f"eval/{name}/num_texts"] == 3           # every caption (one per val clip)
  if config_module == "allinone_msrvtt_ret":   # also tests/test_allinone_tasks.py's retrieval run
    assert set(c.evals) == {"video_text_vtc", "video_text_rerank"}
    assert np.isfinite(out["train/loss"])
    for name in c.objectives:
      assert np.isfinite(out[f"train/{name}_loss"]), name
    steps = int(c.train.num_steps)
    for name in c.evals:
      assert 0.0 <= out[f"eval/{name}/r1"] <= 100.0
      saved = json.loads((tmp_path / "W" / f"eval_{name}_step{steps}.json").read_text())
      assert saved["r1"] == out[f"eval/{name}/r1"]


def test_own_modifier_rejects_tasks_without_captions_or_labels():
  from configs import alpro_msrvtt_qa  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="preset modifier 'own'.*task is 'qa'"):
    alpro_msrvtt_qa.get_config("tiny,own")
