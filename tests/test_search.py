"""`python -m vlx.search` on the users' own videos: train ALPRO tiny 2 steps on a video_text
dataset, then rank its val clips for text queries through the CLI's main in-process; the scores
must be the ones the family's retrieval_scores gives for the eval's encodings."""
import json
import sys

import jax
import numpy as np
import pytest
from absl import flags

from configs import alpro_pretrain
from vlx import search
from vlx.data import eval_stream, pipeline, tasks, text_ops
from vlx.evals import retrieval

OVERRIDES = ("--config.data.train.builder=video_text",
             "--config.data.train.builder_config=captions", "--config.train.num_steps=2")


def _config(data_dir: str):
  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = data_dir
  c.data.train.update(builder="video_text", builder_config="captions", split="train")
  c.train.num_steps = 2
  return c


def _cli(monkeypatch, repo_root, data_dir, workdir, *args):
  """vlx.search's absl main, in-process (flags reset between calls; config_flags reads the
  --config.* overrides from sys.argv, as under app.run)."""
  argv = ["vlx.search", "--config", f"{repo_root}/configs/alpro_pretrain.py:tiny",
          "--workdir", str(workdir), f"--config.data.data_dir={data_dir}", *OVERRIDES, *args]
  monkeypatch.setattr(sys, "argv", argv)
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # re-defined by each parse
    delattr(flags.FLAGS, name)
  search.main(search.parse_flags(argv))


@pytest.fixture(scope="module")
def trained(own_videos_alpro):
  """The workdir of conftest's own_videos_alpro run: the config of `_config` (the CLI's --config
  file and OVERRIDES) trained 2 steps (its val eval changes no weight)."""
  c = own_videos_alpro["config"]
  assert (c.data.train.builder, c.data.train.builder_config, c.train.num_steps) == (
      "video_text", "captions", 2)
  return own_videos_alpro["workdir"]


def test_search_matches_retrieval_scores(trained, own_videos, repo_root, tmp_path, monkeypatch):
  data_dir = own_videos["data_dir"]
  caption = next(c for _, c, s in own_videos["rows"] if s == "val")        # clip v5's caption
  queries = [caption, "a square moves"]
  out_file = tmp_path / "results.json"
  _cli(monkeypatch, repo_root, data_dir, trained, "--builder=video_text",
       "--builder_config=captions", "--split=val", "--top_k=2", f"--query={queries[0]}",
       f"--query={queries[1]}", f"--out={out_file}")
  out = json.loads(out_file.read_text())
  assert out["num_videos"] == 3 and out["split"] == "val" and out["mode"] == "vtc"
  assert "checkpoint step 2" in out["weights"]
  assert [r["query"] for r in out["results"]] == queries
  for r in out["results"]:
    assert len(r["top"]) == 2
    scores = [h["score"] for h in r["top"]]
    assert scores == sorted(scores, reverse=True)
    assert {h["video_id"] for h in r["top"]} <= {"clips/v5", "clips/v6", "clips/v7"}

  # Expected: the eval's own encodings and family.retrieval_scores, computed here directly.
  config, family, model, _, _ = search.load_model(_config(data_dir), str(trained))
  ev = search.retrieval_block(config, "video_text", "captions", "val")
  videos, texts, index = [], [], []
  for batch in eval_stream.make_eval_batches(ev, config, batch_size=2):
    keep = batch["valid"]
    videos.append(jax.tree.map(lambda x: np.asarray(x)[keep], family.encode_videos(model, batch)))
    texts.append(jax.tree.map(lambda x: np.asarray(x)[keep], family.encode_texts(model, batch)))
    index.append(batch["video_index"][keep])
  cat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  videos, texts, index = cat(videos), cat(texts), np.concatenate(index)
  assert list(index) == [0, 1, 2]
  builder = pipeline.get_builder("video_text", "captions", data_dir)
  split = list(tasks.read_features(builder, "val", ("video_id", "captions")))  # TFDS order
  names = [ex["video_id"].decode() for ex in split]
  assert sorted(names) == ["clips/v5", "clips/v6", "clips/v7"]
  assert split[names.index("clips/v5")]["captions"][0].decode() == caption
  eval_sim = np.asarray(family.retrieval_scores(model, texts, videos, mode="vtc"))
  tok = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  ids, mask = text_ops.tokenize(tok, queries, int(ev.max_text_len))
  q = family.encode_texts(model, dict(text_ids=ids, text_mask=mask))
  query_sim = np.asarray(family.retrieval_scores(model, q, videos, mode="vtc"))
  np.testing.assert_allclose(query_sim[0], eval_sim[names.index("clips/v5")],  # same caption
                             rtol=1e-5, atol=1e-5)
  for row, r in zip(query_sim, out["results"]):
    top = np.argsort(-row, kind="stable")[:2]
    assert [h["index"] for h in r["top"]] == [int(index[j]) for j in top]
    assert [h["video_id"] for h in r["top"]] == [names[j] for j in top]
    np.testing.assert_allclose([h["score"] for h in r["top"]], row[top], rtol=1e-5, atol=1e-5)
  # The retrieval eval's path (encode_split) ranks the caption with the same scores.
  e_texts, e_videos, _, gt = retrieval.encode_split(model, family, ev, config,
                                                    search.load_model(config, str(trained))[3])
  np.testing.assert_allclose(
      np.asarray(family.retrieval_scores(model, e_texts, e_videos, mode="vtc")), eval_sim,
      rtol=1e-5, atol=1e-5)
  assert list(gt) == [0, 1, 2]


def test_search_errors(trained, own_videos, repo_root, tmp_path, capsys, monkeypatch):
  data_dir = own_videos["data_dir"]
  cases = [((trained, "--query= "), "non-empty"),
           ((trained, "--query=a square", "--split=vall"), "has splits"),
           ((tmp_path / "empty", "--query=a square"), "no checkpoint")]
  for (workdir, *args), message in cases:
    with pytest.raises(SystemExit) as e:
      _cli(monkeypatch, repo_root, data_dir, workdir, "--builder=video_text",
           "--builder_config=captions", "--split=val", *args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
