"""Attributes of a moving_shapes clip and the text written about it.

Everything here is pure Python (no TF, no numpy state): the builder samples an `Attributes`, the
renderer draws it, and these functions write captions, questions and multiple-choice options. The
templates use a small closed vocabulary (`vocabulary()`), so the shipped WordPiece vocab
(vlx/data/vocab/moving_shapes_vocab.txt) tokenizes every string without [UNK].
"""
from __future__ import annotations

import dataclasses
import random

# Saturated, well-separated RGB colours (nearest-colour classification survives JPEG and resizing).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 20, 20), "orange": (255, 128, 0), "yellow": (255, 240, 0),
    "green": (20, 200, 40), "cyan": (0, 220, 230), "blue": (30, 60, 255),
    "purple": (150, 30, 220), "pink": (255, 110, 200)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "ring")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
           "diamond": "diamonds", "cross": "crosses", "star": "stars", "ring": "rings"}
# Image coordinates: x to the right, y downwards. Diagonals are unit vectors.
DIRECTIONS = ("left", "right", "up", "down", "up_left", "up_right", "down_left", "down_right")
SIZES = ("small", "large")
SPEEDS = ("slow", "fast")
BACKGROUNDS = ("black", "gray", "white", "noisy")
COUNTS = (1, 2)
COUNT_WORDS = {1: "one", 2: "two"}

_DIR_SHORT = {"left": "left", "right": "right", "up": "up", "down": "down",
              "up_left": "up and left", "up_right": "up and right",
              "down_left": "down and left", "down_right": "down and right"}
_DIR_TOWARD = {"left": "toward the left", "right": "toward the right", "up": "toward the top",
               "down": "toward the bottom", "up_left": "toward the top left",
               "up_right": "toward the top right", "down_left": "toward the bottom left",
               "down_right": "toward the bottom right"}
_SPEED_ADV = {"slow": "slowly", "fast": "quickly"}


@dataclasses.dataclass(frozen=True)
class Attributes:
  """What a clip shows; `num_objects` copies of one shape move together."""
  shape: str
  colour: str
  size: str
  direction: str
  speed: str
  num_objects: int
  background: str

  def key(self) -> tuple:
    """The attributes the canonical caption names (background excluded)."""
    return (self.num_objects, self.size, self.colour, self.shape, self.direction, self.speed)


def sample_attributes(rng: random.Random) -> Attributes:
  return Attributes(shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)),
                    size=rng.choice(SIZES), direction=rng.choice(DIRECTIONS),
                    speed=rng.choice(SPEEDS), num_objects=rng.choice(COUNTS),
                    background=rng.choice(BACKGROUNDS))


def num_combinations() -> int:
  """Distinct canonical captions (what retrieval can tell apart)."""
  return len(SHAPES) * len(COLOURS) * len(SIZES) * len(DIRECTIONS) * len(SPEEDS) * len(COUNTS)


def _noun(a: Attributes) -> str:
  return PLURALS[a.shape] if a.num_objects > 1 else a.shape


def _det(a: Attributes) -> str:
  return "two" if a.num_objects > 1 else "a"


def canonical_caption(a: Attributes) -> str:
  """Names every attribute except the background: 'a small red circle moves left slowly'."""
  verb = "move" if a.num_objects > 1 else "moves"
  return (f"{_det(a)} {a.size} {a.colour} {_noun(a)} {verb} {_DIR_SHORT[a.direction]} "
          f"{_SPEED_ADV[a.speed]}")


def captions(a: Attributes) -> list[str]:
  """Five templated captions; all name colour and shape, most direction, size and speed."""
  plural = a.num_objects > 1
  return [
      canonical_caption(a),
      f"{_det(a)} {a.colour} {_noun(a)} {_SPEED_ADV[a.speed]} drifting {_DIR_TOWARD[a.direction]} "
      f"on a {a.background} background",
      f"the {a.colour} {_noun(a)} {'go' if plural else 'goes'} {_DIR_SHORT[a.direction]}",
      f"{_det(a)} {a.size} {a.colour} {_noun(a)} on a {a.background} background",
      f"a video of {_det(a)} {a.speed} {a.colour} {_noun(a)} heading {_DIR_TOWARD[a.direction]}",
  ]


def direction_answer(direction: str) -> str:
  return direction.replace("_", " ")


def questions(a: Attributes) -> list[dict[str, str]]:
  """One question per qtype (colour, shape, direction, count) with its short answer."""
  plural = a.num_objects > 1
  be, do = ("are", "do") if plural else ("is", "does")
  obj = "objects" if plural else "object"
  return [
      dict(question=f"what color {be} the {_noun(a)}?", answer=a.colour, qtype="colour"),
      dict(question=f"what shape {be} the {a.colour} {obj}?", answer=a.shape, qtype="shape"),
      dict(question=f"which way {do} the {a.colour} {_noun(a)} move?",
           answer=direction_answer(a.direction), qtype="direction"),
      dict(question=f"how many {a.colour} {PLURALS[a.shape]} are there?",
           answer=COUNT_WORDS[a.num_objects], qtype="count"),
  ]


def multiple_choice(a: Attributes, rng: random.Random,
                    num_choices: int = 5) -> tuple[list[str], int]:
  """Canonical captions of `a` and of distractors that differ in one to three attributes."""
  options = dict(shape=SHAPES, colour=tuple(COLOURS), size=SIZES, direction=DIRECTIONS,
                 speed=SPEEDS, num_objects=COUNTS)
  seen = {a.key()}
  distractors: list[Attributes] = []
  while len(distractors) < num_choices - 1:
    fields = rng.sample(sorted(options), rng.randint(1, 3))
    change = {f: rng.choice([v for v in options[f] if v != getattr(a, f)]) for f in fields}
    d = dataclasses.replace(a, **change)
    if d.key() not in seen:
      seen.add(d.key())
      distractors.append(d)
  answer = rng.randrange(num_choices)
  choices = [canonical_caption(d) for d in distractors]
  choices.insert(answer, canonical_caption(a))
  return choices, answer


def vocabulary() -> list[str]:
  """Every word (and punctuation token) any caption, question, answer or choice can contain."""
  words: set[str] = set()
  for shape in SHAPES:
    for colour in COLOURS:
      for direction in DIRECTIONS:
        for count in COUNTS:
          for bg in BACKGROUNDS:
            for speed in SPEEDS:
              a = Attributes(shape, colour, "small", direction, speed, count, bg)
              texts = captions(a) + [qa[k] for qa in questions(a) for k in ("question", "answer")]
              texts += captions(dataclasses.replace(a, size="large"))
              for t in texts:
                words.update(t.replace("?", " ? ").split())
  return sorted(words)
