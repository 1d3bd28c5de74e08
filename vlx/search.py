"""Text-to-video search over your own clips with a trained (or converted) model.

`python -m vlx.search --config configs/<file>.py[:preset] --workdir W --query "a dog runs"
[--query ...] [--builder video_text --builder_config captions --split val] [--top_k 5]
[--mode vtc|vtm|rerank] [--out results.json]`

Weights: the latest checkpoint of W, else `config.init` as a fresh start would load it (e.g.
--config.init.from_converted=DIR of `python -m vlx.convert`). Clips: every clip of the builder/split
(default: the config's first retrieval eval block), encoded exactly as the retrieval eval encodes
them (`vlx.evals.retrieval.encode_split`); the queries use the same tokenizer and max_text_len and
are scored with the family's `retrieval_scores` (`score_matrix`), so a query equal to a caption
gets the scores the eval ranks by. Exit code 2 on bad flags, config, files or data: one line
`python -m vlx.search: error: ...` (vlx/cli.py); 0 for --help.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vlx import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with get_config(arg): configs/<family>_<task>.py[:preset] (presets: "
    "'' = the paper's setting, demo, tiny; modifier own = your videos, e.g. :demo,own).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory whose latest checkpoint is used.")
_QUERY = flags.DEFINE_multi_string("query", None, "A text query (repeat for several).")
_BUILDER = flags.DEFINE_string("builder", None, "Dataset builder (default: the first retrieval "
                               "eval block's), e.g. video_text.")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None, "Builder config, e.g. captions.")
_SPLIT = flags.DEFINE_string("split", None, "Split to search, e.g. val.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Clips listed per query.")
_MODE = flags.DEFINE_string("mode", "vtc",
                          "a retrieval mode of the config's family (Family.retrieval_modes), e.g. "
                          "vtc: embedding similarity (fast); vtm: every pair through the fusion "
                          "head (exact); rerank: vtc top-k re-scored by vtm")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")
flags.mark_flags_as_required(["config", "workdir", "query"])


class SearchError(cli.UserError, ValueError):
  """Bad input (no weights, unknown split, empty query): reported as one line, exit code 2."""


def retrieval_block(config, builder: str | None = None, builder_config: str | None = None,
                    split: str | None = None, mode: str = "vtc") -> ml_collections.ConfigDict:
  """A copy of the config's first retrieval eval block (frames, resolution, max_text_len, ...),
  else one made of config.data.train's fields (uniform sampling), with the given overrides."""
  names = [n for n, ev in config.evals.items() if ev.get("type") == "retrieval"]
  if names:
    ev = config.evals[names[0]].copy_and_resolve_references()
  else:
    t = config.data.train
    ev = ml_collections.ConfigDict(dict(
        type="retrieval", builder=t.builder, builder_config=t.get("builder_config", ""),
        split=t.split, num_frames=t.num_frames, sampling="uniform", resolution=t.resolution,
        crop=t.crop, resize=t.get("resize", "square"), norm=t.get("norm", "clip"),
        max_text_len=t.max_text_len, text_field=t.get("text_field", "captions"),
        all_captions=False, batch_size=32, every=0))
  ev.unlock()
  if builder is not None and builder != ev.builder and builder_config is None:
    builder_config = ""  # the block's builder_config belongs to its builder: use the default
  for key, value in (("builder", builder), ("builder_config", builder_config), ("split", split)):
    if value is not None:
      ev[key] = value
  ev.mode = mode
  return ev


def _check_split(config, ev) -> None:
  """Unknown split (e.g. --split=vall) -> SearchError listing the builder's splits."""
  from vlx.data import pipeline  # pylint: disable=import-outside-toplevel
  builder = pipeline.get_builder(ev.builder, ev.get("builder_config", ""), config.data.data_dir,
                                 config.data.get("manual_dir", ""))
  known = sorted(builder.info.splits.keys())
  if any(part.split("[")[0].strip() not in known for part in str(ev.split).split("+")):
    raise SearchError(f"--split={ev.split!r}: {ev.builder}/{ev.get('builder_config', '')} in "
                      f"{config.data.data_dir} has splits {known}")


def _require_weights(config, workdir: str) -> None:
  """No checkpoint step in the workdir and no full init source -> SearchError (before any work)."""
  from vlx import cli, checkpoint as ckpt  # pylint: disable=import-outside-toplevel
  folder = ckpt.checkpoint_dir(workdir)
  if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()):
    return
  if not _init_source(config):
    raise _no_weights(folder)


def _init_source(config) -> str:
  return config.init.get("from_converted") or config.init.get("from_checkpoint") or ""


def _no_weights(folder) -> SearchError:
  return SearchError(f"no checkpoint in {folder} and no init source: train first, or pass "
                     "--config.init.from_converted=DIR (python -m vlx.convert) or "
                     "--config.init.from_checkpoint=WORKDIR")


def load_model(config, workdir: str):
  """(config with the mesh strategy resolved, family, model, mesh, weights description)."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vlx import checkpoint as ckpt, config_validation, registry, steps, train
  from vlx import sharding as shd
  try:
    config = shd.resolve_strategy(config)
  except ValueError as e:
    raise config_validation.ConfigError(str(e)) from None
  config_validation.validate(config)
  family = registry.get(config.model.family)
  mesh = shd.make_mesh(config.mesh)
  prog = steps.program(family, config, mesh)
  with jax.set_mesh(mesh), shd.use_rules(tuple(config.mesh.rules)):
    restored = None
    if ckpt.checkpoint_dir(workdir).is_dir():
      manager = ckpt.make_manager(workdir, ckpt_every=0, keep=0, read_only=True)
      try:
        restored = ckpt.restore(manager, steps.with_shardings(prog.abstract, prog.shardings))
      finally:
        manager.close()
    if restored is not None:
      state, step = restored
      source = f"checkpoint step {step} of {ckpt.checkpoint_dir(workdir)}"
    else:
      if not _init_source(config):
        raise _no_weights(ckpt.checkpoint_dir(workdir))
      state = train.prepare_fresh_state(family, config, prog,
                                        ckpt.init_from(prog.init(), config.init, family=family))
      source = f"config.init {_init_source(config)}"
  return config, family, nnx.merge(prog.graphdef, state["params"], state["other"]), mesh, source


def _video_ids(config, ev, index) -> list[str]:
  """The builder's video_id of each clip position (the position itself without that feature)."""
  from vlx.data import pipeline, tasks  # pylint: disable=import-outside-toplevel
  builder = pipeline.get_builder(ev.builder, ev.get("builder_config", ""), config.data.data_dir,
                                 config.data.get("manual_dir", ""))
  if "video_id" not in builder.info.features:
    return [str(int(i)) for i in index]
  ids = [ex["video_id"] for ex in tasks.read_features(builder, ev.split, ("video_id",))]
  text = lambda b: b.decode() if isinstance(b, bytes) else str(b)
  return [text(ids[int(i)]) for i in index]


def search(config, workdir: str, queries: Sequence[str], *, builder: str | None = None,
           builder_config: str | None = None, split: str | None = None, top_k: int = 5,
           mode: str = "vtc", make_eval_batches=None) -> dict[str, Any]:
  """Ranks every clip of the split for each query; returns {'weights', 'builder', 'split', 'mode',
  'num_videos', 'results': [{'query', 'top': [{'video_id', 'index', 'score'}, ...]}]}, scores in
  descending order (stable: ties keep clip order, as the eval ranks)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vlx import sharding as shd
  from vlx import registry
  from vlx.data import text_ops
  from vlx.evals import retrieval
  queries = [str(q) for q in queries or ()]
  if not queries or any(not q.strip() for q in queries):
    raise SearchError(f"--query: expected one or more non-empty texts, got {queries!r}")
  if top_k < 1:
    raise SearchError(f"--top_k={top_k}: expected >= 1")
  ev = retrieval_block(config, builder, builder_config, split, mode)
  try:  # the modes come from the family (Family.retrieval_modes)
    retrieval.check_mode(registry.get(config.model.family), ev)
  except ValueError as e:
    raise SearchError(f"--mode={mode}: " + str(e).replace(f"evals.<name>.mode={mode!r}: ", "")
                      ) from None
  _require_weights(config, workdir)
  _check_split(config, ev)
  config, family, model, mesh, source = load_model(config, workdir)
  _, videos, index, _ = retrieval.encode_split(model, family, ev, config, mesh, make_eval_batches)
  tokenizer = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  ids, mask = text_ops.tokenize(tokenizer, queries, int(ev.max_text_len))
  graphdef, state = nnx.split(model)
  with jax.set_mesh(mesh), shd.use_rules(tuple(config.mesh.rules)):
    texts = jax.jit(lambda s, b: family.encode_texts(nnx.merge(graphdef, s), b))(
        state, dict(text_ids=ids, text_mask=mask))
    texts = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), texts)
    sim = retrieval.score_matrix(family, model, texts, videos, ev)
  names = _video_ids(config, ev, index)
  k = min(int(top_k), sim.shape[1])
  results = []
  for q, row in zip(queries, sim):
    order = np.argsort(-row, kind="stable")[:k]
    results.append(dict(query=q, top=[dict(video_id=names[j], index=int(index[j]),
                                           score=float(row[j])) for j in order]))
  return dict(weights=source, builder=ev.builder, builder_config=ev.get("builder_config", ""),
              split=ev.split, mode=mode, num_videos=int(sim.shape[1]), results=results)


PROG = "python -m vlx.search"


@cli.entry_point(PROG)
def main(argv: list[str]) -> None:
  """Prints each query's top clips and writes --out (app.run exits with main's return value)."""
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]} (queries are given as "
                         "--query 'a dog runs')")
  out = search(_CONFIG.value, _WORKDIR.value, _QUERY.value, builder=_BUILDER.value,
               builder_config=_BUILDER_CONFIG.value, split=_SPLIT.value, top_k=_TOP_K.value,
               mode=_MODE.value)
  print(f"{out['num_videos']} clips of {out['builder']}/{out['split']}, mode {out['mode']}, "
        f"weights: {out['weights']}")
  for r in out["results"]:
    print(f"query: {r['query']}")
    for rank, hit in enumerate(r["top"], 1):
      print(f"  {rank}. {hit['video_id']}  {hit['score']:.4f}")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=2)


parse_flags = cli.flags_parser(PROG)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
