"""tgif_qa: TGIF-QA (Jang et al. 2017) on the TGIF animated GIFs (Li et al. 2016).

The official question files are tab-separated with a header line (dataset/README.md of
YunseokJANG/tgif-qa):
  {Train,Test}_action_question.csv / _transition_question.csv:
      gif_name  question  a1 a2 a3 a4 a5  answer (0-based option index)  vid_id  key
  {Train,Test}_frameqa_question.csv:
      gif_name  question  answer  type (0 object, 1 number, 2 color, 3 location)  vid_id  key
      description
Configs: `action` and `transition` (repetition-action / state-transition multiple choice: one
example per question) and `frameqa` (open-ended, one example per GIF with its QA pairs, qtype from
the type column). Splits train / test; test is the papers' test set (TGIF-QA has no val split).
"""
from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

SPLIT_PREFIX = {"train": "Train", "test": "Test"}
FRAMEQA_TYPES = ("object", "number", "color", "location")
NUM_CHOICES = 5
GIF_DIR = "gifs"
MC_COLUMNS = ("gif_name", "question", *(f"a{k}" for k in range(1, NUM_CHOICES + 1)), "answer")
FRAMEQA_COLUMNS = ("gif_name", "question", "answer", "type")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
TGIF-QA question files from https://github.com/YunseokJANG/tgif-qa (folder dataset/:
Train_action_question.csv, Test_action_question.csv, Train_transition_question.csv,
Test_transition_question.csv, Train_frameqa_question.csv, Test_frameqa_question.csv) and the TGIF
GIFs (https://github.com/raingo/TGIF-Release, or the link in tgif-qa's dataset/README.md; the
archive unpacks to gifs/<gif_name>.gif). Put in manual_dir:

  manual_dir/
    gifs/tumblr_nk172bbdPI1u1lr18o1_250.gif ...
    Train_action_question.csv      Test_action_question.csv
    Train_transition_question.csv  Test_transition_question.csv
    Train_frameqa_question.csv     Test_frameqa_question.csv

Files are found by name anywhere under manual_dir (5 folder levels: tgif-qa-master/dataset/,
TGIF-Release/data/gifs/, the GIFs unpacked without gifs/ ...); splits whose csv is absent are not
built. A GIF converted to <gif_name>.mp4 is read when the .gif is absent. Missing GIFs are
skipped and counted.
"""


@dataclasses.dataclass
class TgifQaConfig(bb.VideoBuilderConfig):
  """task: action | transition | frameqa (which question file the config reads)."""
  task: str = "frameqa"



def question_file(task: str, split: str) -> str:
  return f"{SPLIT_PREFIX[split]}_{task}_question.csv"


def _int_in(value: str, n: int, *, file: str, line: int, field: str, expected: str) -> int:
  try:
    out = int(value.strip())
  except ValueError:
    out = -1
  if not 0 <= out < n:
    raise bb.AnnotationError(file, line, field, f"{expected}, got {value!r}")
  return out


def read_multiple_choice(path: str) -> list[dict]:
  """[{key, gif, question, choices (5), answer}] of an action / transition question file."""
  out, seen = [], set()
  for line, row in bb.read_csv(path, MC_COLUMNS, delimiter="\t"):
    key = (row.get("vid_id") or "").strip() or f"line{line}"
    if key in seen:
      key = f"{key}_line{line}"
    seen.add(key)
    out.append(dict(
        key=key, gif=row["gif_name"].strip(), question=row["question"].strip(),
        choices=[row[f"a{k}"].strip() for k in range(1, NUM_CHOICES + 1)],
        answer=_int_in(row["answer"], NUM_CHOICES, file=path, line=line, field="answer",
                       expected=f"an option index 0-{NUM_CHOICES - 1}")))
  return out


def read_frameqa(path: str) -> dict[str, list[dict]]:
  """{gif: [{question, answer, qtype}]} of a frameqa question file, GIFs in first-seen order."""
  out: dict[str, list[dict]] = collections.defaultdict(list)
  for line, row in bb.read_csv(path, FRAMEQA_COLUMNS, delimiter="\t"):
    kind = _int_in(row["type"], len(FRAMEQA_TYPES), file=path, line=line, field="type",
                   expected="0-3 (object, number, color, location)")
    out[row["gif_name"].strip()].append(dict(question=row["question"].strip(),
                                             answer=row["answer"].strip(),
                                             qtype=FRAMEQA_TYPES[kind]))
  return dict(out)


ANNOTATION_DIRS = ("", "dataset", "annotations")


def layout(root, task: str = "frameqa") -> bb.Layout:
  """GIFs (or their .mp4 conversions) by name in any folder: gifs/ as the archive unpacks it,
  TGIF-Release/data/gifs/, or at the top."""
  return bb.Layout(root, f"tgif_qa/{task}", video_dirs=(GIF_DIR, ""),
                   video_extensions=(".gif", *rl.VIDEO_EXTENSIONS))


def gif_path(lay: bb.Layout, gif: str) -> str:
  return lay.video(gif, os.path.join(lay.root, GIF_DIR, f"{gif}.gif"))


def records_for(lay: bb.Layout, task: str, split: str) -> list[bb.VideoRecord]:
  path = lay.require(question_file(task, split), ANNOTATION_DIRS)
  if task == "frameqa":
    return [bb.VideoRecord(key=gif, video_path=gif_path(lay, gif),
                           fields=dict(video_id=gif, qa=pairs))
            for gif, pairs in read_frameqa(path).items()]
  return [bb.VideoRecord(key=q["key"], video_path=gif_path(lay, q["gif"]),
                         fields=dict(video_id=q["gif"], question=q["question"],
                                     mc_choices=q["choices"], mc_answer=np.int32(q["answer"])))
          for q in read_multiple_choice(path)]


class Builder(bb.VideoDatasetBuilder):
  """TGIF-QA action / transition / frameqa from the official files in manual_dir."""

  code_path = epath.Path(__file__)   # TFDS needs the module file (see moving_shapes)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/YunseokJANG/tgif-qa"
  # GIFs last ~3 s at 10-25 fps; 8 fps keeps ~24 frames (models sample 3-16).
  BUILDER_CONFIGS = [
      TgifQaConfig(name=task, task=task, fps=8.0, short_side=256, description=desc)
      for task, desc in (
          ("action", "Repetition action: 5-way multiple choice per question."),
          ("transition", "State transition: 5-way multiple choice per question."),
          ("frameqa", "FrameQA: open-ended QA grouped per GIF, qtype object/number/color/"
                      "location."))
  ]

  def _features(self):
    return bb.qa_features() if self.builder_config.task == "frameqa" else bb.mc_features()

  def _split_records(self, manual_dir: str):
    task = self.builder_config.task
    lay = layout(manual_dir, task)
    return rl.per_split(SPLIT_PREFIX, lambda split: records_for(lay, task, split))
