"""ALPRO entity prompts (spec §5.4): the entity list, the 24 templates and their token batches.

The prompter's prompt features are built once from these batches (row t·E + e = template t
filled with entity e). The entity file follows the reference's `data/unigrams.txt` as it is read
(`setup_text_prompts`): one entry per line, the entity is the line's first space-separated token
and anything after it (e.g. a count) is ignored; the first `num_entities` lines are used.
"""
from __future__ import annotations

import collections
import os
import pathlib
import re

import numpy as np

from vlx.data import text_ops

VIDEO_TEMPLATES = (
    "A footage of a {}.", "A footage of the {}.", "A footage of one {}.",
    "A video of a {}.", "A video of the {}.", "A video of one {}.",
    "A portrait of a {}.", "A portrait of the {}.", "A portrait of one {}.",
    "A video footage of a {}.", "A video footage of the {}.", "A video footage of one {}.")
IMAGE_TEMPLATES = (
    "A photo of a {}.", "A photo of the {}.", "A photo of one {}.",
    "A picture of a {}.", "A picture of the {}.", "A picture of one {}.",
    "A good photo of the {}.", "A good photo of a {}.", "A good photo of one {}.",
    "A good picture of the {}.", "A good picture of a {}.", "A good picture of one {}.")
TEMPLATES = {"video": VIDEO_TEMPLATES, "image": IMAGE_TEMPLATES}
PROMPT_MAX_LENGTH = 15  # the reference tokenises prompts to 15 tokens, padded
SHIPPED = {"moving_shapes": text_ops.VOCAB_DIR / "moving_shapes_entities.txt"}


def template_words() -> list[str]:
  """Lower-cased words and punctuation of every template (a tokenizer must know them)."""
  words: set[str] = set()
  for t in VIDEO_TEMPLATES + IMAGE_TEMPLATES:
    words.update(re.findall(r"\w+|[^\w\s]", t.replace("{}", " ").lower()))
  return sorted(words)


def load_entities(path: str | os.PathLike, num_entities: int) -> list[str]:
  """The first token of each of the first `num_entities` lines of `path`."""
  path = pathlib.Path(os.path.expanduser(str(path)))
  if not path.is_file():
    raise FileNotFoundError(f"entity file {str(path)!r} (config.data.entities) does not exist")
  lines = path.read_text().split("\n")
  if lines and lines[-1] == "":
    lines = lines[:-1]  # the final newline
  if len(lines) < num_entities:
    raise ValueError(f"entity file {path} has {len(lines)} lines but config.model.num_entities="
                     f"{num_entities}; give a longer list or lower num_entities")
  entities = [line.rstrip("\r").split(" ")[0] for line in lines[:num_entities]]
  for i, e in enumerate(entities):
    if not e:
      raise ValueError(f"entity file {path}, line {i + 1}: no entity (expected '<entity> ...', "
                       "the entity as the first space-separated token)")
  return entities


def write_entities(entries, path: str | os.PathLike) -> None:
  """Writes (entity, count) pairs as '<entity> <count>' lines, in the given order."""
  pathlib.Path(path).write_text("".join(f"{e} {c}\n" for e, c in entries))


def moving_shapes_entities() -> list[tuple[str, int]]:
  """The moving_shapes entity list with unigram counts over its captions and questions.

  'object' comes first on purpose: the reference ignores every clip whose most similar entity
  has index 0 (spec §5.4), so index 0 goes to the generic noun rather than to a shape or colour.
  Then the 7 shapes and the 8 colours: 16 entities (config.model.num_entities of demo/tiny).
  Counts include plural forms, over every attribute combination of the builder.
  """
  from data_builders.moving_shapes import captions as cap  # pylint: disable=g-import-not-at-top
  singular = {p: s for s, p in cap.PLURALS.items()} | {"objects": "object"}
  names = ["object", *cap.SHAPES, *cap.COLOURS]
  counts: collections.Counter = collections.Counter()
  for shape in cap.SHAPES:
    for colour in cap.COLOURS:
      for direction in cap.DIRECTIONS:
        for n in cap.COUNTS:
          a = cap.Attributes(shape, colour, "small", direction, "slow", n, "black")
          for text in cap.captions(a) + [q["question"] for q in cap.questions(a)]:
            counts.update(singular.get(w, w) for w in text.replace("?", " ").split())
  return [(e, counts[e]) for e in names]


def build_prompts(entities: list[str], kind: str = "video") -> list[str]:
  """Every template of `kind` filled with every entity; row t·E + e."""
  if kind not in TEMPLATES:
    raise ValueError(f"prompt kind {kind!r}: expected one of {sorted(TEMPLATES)}")
  return [t.format(e) for t in TEMPLATES[kind] for e in entities]


def build_prompt_batches(tokenizer, entities: list[str], kind: str = "video",
                         max_length: int = PROMPT_MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
  """Tokenised prompts: int32 ids and attention mask [12·E, max_length], row t·E + e."""
  return text_ops.tokenize(tokenizer, build_prompts(entities, kind), max_length)


def entities_path(config) -> str:
  """config.data.entities, or the shipped list of the training builder when it is ''."""
  path = config.data.get("entities", "")
  if path:
    return path
  builder = config.data.train.builder
  if builder in SHIPPED:
    return str(SHIPPED[builder])
  raise ValueError(f"config.data.entities is empty and there is no shipped entity list for "
                   f"builder {builder!r}; set it to an entity file such as ALPRO's "
                   "data/unigrams.txt")


def prompt_inputs(config) -> dict[str, np.ndarray]:
  """Token batches for the prompter's prompt features: {video,image}_prompt_{ids,mask}, int32
  [12·num_entities, 15], with the training tokenizer and config.model.num_entities entities."""
  tokenizer = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  entities = load_entities(entities_path(config), int(config.model.num_entities))
  out = {}
  for kind in ("video", "image"):
    ids, mask = build_prompt_batches(tokenizer, entities, kind)
    out[f"{kind}_prompt_ids"], out[f"{kind}_prompt_mask"] = ids, mask
  return out
