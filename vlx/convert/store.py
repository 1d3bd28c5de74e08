"""Writing and reading converted checkpoints (the `config.init.from_converted` directory).

Layout of `out_dir`: `params/` (Orbax StandardCheckpointer, the model state as a pure nested dict;
`nnx.List` indices become string keys on disk and are restored through a target tree),
`model_config.json` (the model block the state was built for) and `conversion_report.json`.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from flax import nnx

from vlx import registry
from vlx.convert.engine import ConversionResult, abstract_model
from vlx.convert.errors import ConversionError

PARAMS, MODEL_CONFIG, REPORT = "params", "model_config.json", "conversion_report.json"


def _checkpointer():
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.StandardCheckpointer()


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> pathlib.Path:
  out = pathlib.Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  path = out / REPORT
  path.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
  return path


def save_converted(result: ConversionResult, out_dir: str | os.PathLike) -> pathlib.Path:
  """Writes params (Orbax), model_config.json and conversion_report.json; returns out_dir."""
  if result.model is None:
    raise ConversionError("nothing to save: the conversion was a dry run or left targets "
                          f"unfilled (missing: {result.report.get('missing', [])[:5]})")
  out = pathlib.Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  ckptr = _checkpointer()
  ckptr.save(out / PARAMS, nnx.to_pure_dict(nnx.state(result.model)), force=True)
  ckptr.wait_until_finished()
  (out / MODEL_CONFIG).write_text(result.model_config.to_json_best_effort(indent=1) + "\n")
  write_report(result.report, out)
  return out


def read_model_config(out_dir: str | os.PathLike) -> ml_collections.ConfigDict:
  path = pathlib.Path(out_dir) / MODEL_CONFIG
  if not path.is_file():
    raise ConversionError(f"{path} not found: is {out_dir} the output of `python -m vlx.convert`?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_converted(out_dir: str | os.PathLike, *, target: nnx.State | None = None,
                   build: Callable | None = None
                   ) -> tuple[ml_collections.ConfigDict, nnx.State]:
  """Reads a converted checkpoint -> (model_config, nnx.State of Variables).

  `target`: an abstract state (e.g. `nnx.state(nnx.eval_shape(...))`, leaves may carry shardings)
  to restore into; by default the model is built abstractly from model_config.json with
  the build function of the family's contract record (`vlx.registry.get(family).build`, or
  `build`).
  """
  out = pathlib.Path(out_dir).absolute()
  cfg = read_model_config(out)
  if target is None:
    if build is None:
      build = registry.get(cfg.family).build
    target = nnx.state(abstract_model(build, cfg))
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=getattr(x, "sharding", None)),
                      nnx.to_pure_dict(target))
  try:
    restored = _checkpointer().restore(out / PARAMS, spec)
  except (ValueError, KeyError) as e:
    raise ConversionError(f"{out / PARAMS}: does not match the model of {MODEL_CONFIG}: {e}") \
        from None
  state = copy.deepcopy(target)
  nnx.replace_by_pure_dict(state, restored)
  return cfg, state
