"""Every model family against the family contract (vlx.registry.Family, README 'Design').

Parametrised over `registry.available()` and the toy family of the loop tests. A family's tiny
configs are its `configs/<family>_*.py` files that have a 'tiny' preset; the paper-size configs
the same files' default preset. Models are abstract (`nnx.eval_shape`) and scorers / objectives
run under `jax.eval_shape` on tiny synthetic batches: shapes are checked, nothing is compiled or
allocated, so a family takes seconds.
"""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

import fake_family
from vlx import optim, registry
from vlx.convert.engine import abstract_model  # nnx.eval_shape with a host-side RNG counter

REPO = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = registry.available() + ["fake"]
# What vlx.convert.engine calls on a converter module (its docstring); `tied` / `build` optional.
CONVERTER_API = ("detect_variant", "infer_model_config", "rules", "unused")
# The eval types of vlx.evals and the Family scorers each one calls.
EVAL_SCORERS = {"retrieval": ("encode_videos", "encode_texts", "retrieval_scores"),
                "qa": ("qa_logits",), "multiple_choice": ("mc_scores",),
                "classification": ("class_logits",)}
SCORERS = ("encode_videos", "encode_texts", "retrieval_scores", "pair_scores", "qa_logits",
           "mc_scores", "class_logits")
B, K = 4, 3   # rows and multiple-choice options of the synthetic batches


def _family(name: str) -> registry.Family:
  return fake_family.FAMILY if name == "fake" else registry.get(name)


def _config_modules(name: str) -> list:
  """The family's config modules, pre-training first (their models carry the most parts)."""
  paths = sorted(REPO.glob(f"configs/{name}_*.py"),
                 key=lambda p: (not p.stem.endswith("_pretrain"), p.stem))
  mods = [importlib.import_module(f"configs.{p.stem}") for p in paths]
  return [m for m in mods if hasattr(m, "get_config")]


@functools.lru_cache(maxsize=None)
def _configs(name: str, preset: str) -> tuple[tuple[str, ml_collections.ConfigDict], ...]:
  """(config name, config) of every family config with this preset."""
  if name == "fake":
    return (("toy", fake_family.toy_config()),)
  out = []
  for mod in _config_modules(name):
    try:
      out.append((mod.__name__, mod.get_config(preset)))
    except ValueError as e:
      if "preset" not in str(e):
        raise
  return tuple(out)


@functools.lru_cache(maxsize=None)
def _abstract(name: str, preset: str, index: int) -> tuple[nnx.GraphDef, nnx.State, set[str]]:
  """(graphdef, abstract state, parameter paths) of the index-th config's model."""
  cfg = _configs(name, preset)[index][1]
  model = abstract_model(_family(name).build, cfg.model)
  graphdef, state = nnx.split(model)
  params = nnx.state(model, nnx.Param)
  paths = {optim.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  return graphdef, state, paths


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(int(d) for d in shape), jnp.dtype(dtype))


def _input_specs(data: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """The batch keys of the block's modality readers (`inputs`; none: the frames `video`)."""
  if not data.get("inputs", None):
    size = int(data.get("crop", 0) or data.resolution)
    return {"video": _spec((B, int(data.num_frames), size, size, 3), jnp.float32)}
  from vlx.data import modalities  # pylint: disable=import-outside-toplevel
  return {k: _spec((B,) + tuple(shape), dtype)
          for r in modalities.make_readers(data, "data").values()
          for k, (shape, dtype) in r.spec().items()}


def _batch(data: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a tiny batch with every project batch key a scorer / objective may read."""
  length = int(data.max_text_len)
  i32 = jnp.int32
  return {**_input_specs(data),
          "text_ids": _spec((B, length), i32), "text_mask": _spec((B, length), i32),
          "mlm_text_ids": _spec((B, length), i32), "mlm_labels": _spec((B, length), i32),
          "label": _spec((B,), i32), "choice_ids": _spec((B, K, length), i32),
          "choice_mask": _spec((B, K, length), i32), "video_index": _spec((B,), i32),
          "view_index": _spec((B,), i32), "valid": _spec((B,), jnp.bool_)}


def _run(name: str, preset: str, index: int, fn, *args):
  """jax.eval_shape of fn(model, *args) on the abstract model of a config."""
  graphdef, state, _ = _abstract(name, preset, index)
  return jax.eval_shape(lambda st, *a: fn(nnx.merge(graphdef, st), *a), state, *args)


def _first_with_eval(name: str, eval_type: str):
  """(index, eval name, eval block) of the first tiny config that runs an eval of this type."""
  for i, (_, cfg) in enumerate(_configs(name, "tiny")):
    for ev_name, ev in cfg.evals.items():
      if ev.get("type") == eval_type:
        return i, ev_name, ev
  return None


# ----------------------------------------------------------------------------- the record


@pytest.mark.parametrize("name", FAMILIES)
def test_record_and_tiny_build(name):
  fam = _family(name)
  assert isinstance(fam, registry.Family)
  if name != "fake":
    assert fam.name == name, "Family.name must be the package name (config.model.family)"
    mod = importlib.import_module(f"vlx.models.{name}")
    assert registry.family_of(mod) is fam
  assert fam.objective_names and len(set(fam.objective_names)) == len(fam.objective_names)
  assert all(isinstance(n, str) and n for n in fam.objective_names)
  configs = _configs(name, "tiny")
  assert configs, f"no tiny preset among configs/{name}_*.py"
  for cfg_name, cfg in configs:
    assert cfg.model.family == fam.name, cfg_name
    assert set(cfg.objectives) <= set(fam.objective_names), cfg_name
    if fam.validate_config is not None:
      fam.validate_config(cfg)
  _, _, paths = _abstract(name, "tiny", 0)
  assert paths, "the tiny model has no nnx.Param"
  for hook in ("validate_config", "prepare_fresh_state", "fixture_outputs", "data_hooks"):
    assert getattr(fam, hook) is None or callable(getattr(fam, hook)), hook
  if name != "fake":
    assert callable(fam.fixture_outputs), "a shipped family provides its parity runner"


@pytest.mark.parametrize("name", FAMILIES)
def test_objectives_return_scalar_losses_of_active_names(name):
  fam = _family(name)
  _, cfg = _configs(name, "tiny")[0]
  active = frozenset(k for k, w in cfg.objectives.items() if float(w))
  assert active, "the tiny config trains something"
  rng = jax.random.key(0)
  losses, metrics = _run(name, "tiny", 0, lambda m, b, r: fam.objectives(
      m, b, active=active, rng=r, train=True), _batch(cfg.data.train), rng)
  assert losses and set(losses) <= active, (sorted(losses), sorted(active))
  for k, v in {**losses, **metrics}.items():
    assert v.shape == (), k
  # metric naming is the step's (vlx.steps.weighted_loss): families do not add `*_loss` / `loss`
  assert not any(k == "loss" or k.endswith("_loss") for k in metrics), sorted(metrics)


@pytest.mark.parametrize("name", FAMILIES)
def test_supported_scorers_have_the_documented_shapes(name):
  fam = _family(name)
  supported = {s for s in SCORERS if fam.supports(s)}
  exercised = set()
  if fam.retrieval_scores is not None:
    assert fam.retrieval_modes, "retrieval_scores needs the modes it scores"
  for eval_type, scorers in EVAL_SCORERS.items():
    if not any(fam.supports(s) for s in scorers):
      continue
    found = _first_with_eval(name, eval_type)
    if found is None and name == "fake":   # one toy model serves every scorer
      found = (0, "train", _configs(name, "tiny")[0][1].data.train)
    assert found is not None, f"no tiny config of {name!r} runs a {eval_type!r} eval"
    index, ev_name, ev = found
    batch = _batch(ev)
    if eval_type == "retrieval":
      mode = ev.get("mode", "vtc")
      assert mode in fam.retrieval_modes, (ev_name, mode)

      def retrieval(m, b, mode=mode):
        texts, videos = fam.encode_texts(m, b), fam.encode_videos(m, b)
        out = {"scores": fam.retrieval_scores(m, texts, videos, mode=mode)}
        if fam.pair_scores is not None:
          out["pairs"] = fam.pair_scores(m, texts, videos)
        return out
      out = _run(name, "tiny", index, retrieval, batch)
      assert out["scores"].shape == (B, B), ev_name
      if "pairs" in out:
        assert out["pairs"].shape == (B,), ev_name
        exercised.add("pair_scores")
    else:
      (scorer,) = scorers
      out = _run(name, "tiny", index, getattr(fam, scorer), batch)
      assert out.ndim == 2 and out.shape[0] == B, (scorer, out.shape)
      if scorer == "mc_scores":
        assert out.shape == (B, K)
    exercised.update(scorers)
  assert supported <= exercised, f"scorers without a tiny config to check: {supported - exercised}"
  for s in SCORERS:   # the documented positional signature
    fn = getattr(fam, s)
    if fn is not None:
      n = 3 if s in ("retrieval_scores", "pair_scores") else 2
      inspect.signature(fn).bind(*range(n), **({"mode": "x"} if s == "retrieval_scores" else {}))


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", FAMILIES)
def test_frozen_and_resizable_regexes_match_parameters(name):
  fam = _family(name)
  patterns = list(fam.frozen_params) + list(fam.resizable_params)
  for p in patterns:
    re.compile(p)
  if not patterns:
    return
  # paper-size abstract models (the default presets enable every feature, e.g. ALPRO's PEM)
  unmatched = set(patterns)
  preset = "tiny" if name == "fake" else ""
  for index in range(len(_configs(name, preset))):
    _, state, paths = _abstract(name, preset, index)
    for p in list(unmatched):
      hits = [q for q in paths if re.search(p, q)]
      if hits and p in fam.resizable_params:
        flat = {optim.path_str(k): v for k, v in
                jax.tree_util.tree_flatten_with_path(nnx.state(state, nnx.Param))[0]}
        how = fam.resizable_params[p]
        axis, mode = (how, "nearest") if isinstance(how, int) else tuple(how)
        assert mode in ("nearest", "linear"), (p, mode)
        assert all(-len(flat[q].shape) <= axis < len(flat[q].shape) for q in hits), p
      if hits:
        unmatched.discard(p)
    if not unmatched:
      break
  assert not unmatched, f"regexes that match no parameter of any paper-size model: {unmatched}"


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "fake"])
def test_converter_exposes_the_rule_api(name):
  fam = _family(name)
  if fam.converter is None:
    return
  conv = fam.converter_module()
  missing = [f for f in CONVERTER_API if not callable(getattr(conv, f, None))]
  assert not missing, f"{fam.converter} lacks {missing} (vlx.convert.engine)"
  from vlx.convert.errors import WrongFamilyError  # pylint: disable=import-outside-toplevel
  with pytest.raises(WrongFamilyError):   # engine: "raises WrongFamilyError if nothing fits"
    conv.detect_variant(["not_a_model.weight", "nothing.bias"])


# ----------------------------------------------------------------------------- generic code


# Family names (shipped and announced) and terms only one family has (ALPRO's PEM / prompter).
FAMILY_TERMS = tuple(registry.available()) + ("allinone", "violet", "eao", "vimpac", "pem",
                                              "prompter")
FAMILY_PHRASES = ("all-in-one", "all in one")


def _docstring_nodes(tree: ast.AST) -> set[int]:
  """ids of the docstring constants (module, class, function): prose may cite a spec."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
          and isinstance(body[0].value.value, str):
        out.add(id(body[0].value))
  return out


def _names_a_family(text: str) -> str | None:
  low = text.lower()
  words = set(re.findall(r"[a-z0-9]+", low))
  hit = next((t for t in FAMILY_TERMS if t in words), None)
  return hit or next((p for p in FAMILY_PHRASES if p in low), None)


def generic_code_offenders(root: pathlib.Path = REPO) -> list[str]:
  """'path:line: what' for every identifier / string literal (not docstring or comment) of vlx/
  outside vlx/models/ that names a family, and every import of `configs`."""
  out = []
  for path in sorted((root / "vlx").rglob("*.py")):
    rel = path.relative_to(root).as_posix()
    if rel.startswith("vlx/models/"):
      continue
    tree = ast.parse(path.read_text(), rel)
    docs = _docstring_nodes(tree)
    for node in ast.walk(tree):
      found: list[tuple[str, str]] = []   # (kind, text)
      if isinstance(node, ast.Import):
        found += [("import", a.name) for a in node.names]
        found += [("import as", a.asname) for a in node.names if a.asname]
        out += [f"{rel}:{node.lineno}: imports {a.name}" for a in node.names
                if a.name == "configs" or a.name.startswith("configs.")]
      elif isinstance(node, ast.ImportFrom):
        mod = node.module or ""
        found += [("import", mod)] + [("import", a.name) for a in node.names]
        found += [("import as", a.asname) for a in node.names if a.asname]
        if mod == "configs" or mod.startswith("configs."):
          out.append(f"{rel}:{node.lineno}: imports from {mod}")
      elif isinstance(node, ast.Name):
        found.append(("name", node.id))
      elif isinstance(node, ast.Attribute):
        found.append(("attribute", node.attr))
      elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        found.append(("definition", node.name))
      elif isinstance(node, ast.arg):
        found.append(("argument", node.arg))
      elif isinstance(node, ast.keyword) and node.arg:
        found.append(("keyword", node.arg))
      elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
          and id(node) not in docs:
        found.append(("string", node.value))
      for kind, text in found:
        term = _names_a_family(text)
        if term:
          out.append(f"{rel}:{getattr(node, 'lineno', 0)}: {kind} {text[:60]!r} names {term!r}")
  return sorted(set(out))


def test_offender_scan_finds_names_and_skips_docstrings(tmp_path):
  (tmp_path / "vlx" / "models" / "x").mkdir(parents=True)
  (tmp_path / "vlx" / "models" / "x" / "m.py").write_text("alpro = 'alpro'\n")
  (tmp_path / "vlx" / "g.py").write_text(
      '"""ALPRO spec §5 (docstring: fine)."""\n'
      "# the All-in-one reference (comment: fine)\n"
      "import configs.common\n"
      "def f(pem_weight):\n"
      "  '''prompter docstring'''\n"
      "  return {'protocol': 'all-in-one', 'ok': 1}\n")
  got = generic_code_offenders(tmp_path)
  assert [g.split(":")[1] for g in got] == ["3", "4", "6"], got
  assert any("pem_weight" in g for g in got) and any("all-in-one" in g for g in got)


def test_generic_code_names_no_family():
  offenders = generic_code_offenders()
  assert not offenders, "generic code names a family:\n" + "\n".join(offenders)
