"""lsmdc: LSMDC 2016 movie clips with the challenge's retrieval, multiple-choice and
fill-in-the-blank annotations (configs `retrieval`, `mc`, `fib`).

Every annotation file is tab-separated without a header; a line starts with
<CLIP_ID> <START_ALIGNED> <END_ALIGNED> <START_EXTRACTED> <END_EXTRACTED> and then
  descriptions (retrieval):  <SENTENCE>
  multiple choice:           train/valid: <CORRECT> <DISTRACTOR1..4>;
                             public test: <SENTENCE1..5> <ANSWER_INDEX 1-5>
  fill-in-the-blank:         <SENTENCE> <FILL_IN (with the blank)> <BLANK (the answer)>
Clips are avi/<movie>/<CLIP_ID>.avi, the movie being CLIP_ID without its trailing time range.
"""
from __future__ import annotations

import os
import pathlib
import re
import zlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

VIDEO_DIR = "avi"
VIDEO_EXTENSIONS = (".avi", ".mp4")
ANNOTATION_DIRS = ("", "annotations")   # "" = manual_dir itself
TIMES = ("start_aligned", "end_aligned", "start_extracted", "end_extracted")
BLANK = "_____"
_BLANK_RUN = re.compile(r"_{2,}")
# config -> {split: annotation file}
FILES = {
    "retrieval": {"train": "LSMDC16_annos_training.csv", "validation": "LSMDC16_annos_val.csv",
                  # the 1,000-clip public test set every retrieval paper reports on
                  "test": "LSMDC16_challenge_1000_publictect.csv",
                  "full_test": "LSMDC16_annos_test.csv"},
    "mc": {"train": "LSMDC16_multiple_choice_train.csv",
           "validation": "LSMDC16_multiple_choice_valid.csv",
           "test": "LSMDC16_multiple_choice_test_randomized.csv"},
    "fib": {"train": "LSMDC16_annos_training_FIB.csv", "validation": "LSMDC16_annos_val_FIB.csv",
            "test": "LSMDC16_annos_test_FIB.csv"},
}
COLUMNS = {
    "retrieval": ("clip_id", *TIMES, "sentence"),
    "mc": ("clip_id", *TIMES, *(f"sentence{i}" for i in range(1, 6))),
    "mc_test": ("clip_id", *TIMES, *(f"sentence{i}" for i in range(1, 6)), "answer_index"),
    "fib": ("clip_id", *TIMES, "sentence", "fill_in", "blank"),
}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request access to LSMDC (https://sites.google.com/site/describingmovies/lsmdc-2016/download); the
reply gives a user name and password for the challenge's download scripts. Run the movie
description script (annotations + clips) and, for the `mc` / `fib` configs, the multiple-choice
(downloadChallengeDataMC.sh) and fill-in-the-blank (downloadChallengeDataFIB.sh) scripts, all in
manual_dir (annotation files may also sit in manual_dir/annotations/):
  manual_dir/
    LSMDC16_annos_training.csv  LSMDC16_annos_val.csv  LSMDC16_annos_test.csv
    LSMDC16_challenge_1000_publictect.csv                           (retrieval)
    LSMDC16_multiple_choice_train.csv  LSMDC16_multiple_choice_valid.csv
    LSMDC16_multiple_choice_test_randomized.csv                     (mc)
    LSMDC16_annos_training_FIB.csv  LSMDC16_annos_val_FIB.csv  LSMDC16_annos_test_FIB.csv  (fib)
    avi/0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.094.avi ...
Files are found by name anywhere under manual_dir (5 folder levels: the clips as <movie>/ folders
at the top, the csv files in a folder of their own, ...). Splits whose annotation file is absent
are not built (a warning names the file; at least one must be present).
"""


def movie_of(clip_id: str) -> str:
  """'0001_American_Beauty_00.00.51.926-00.00.54.094' -> '0001_American_Beauty'."""
  return clip_id.rsplit("_", 1)[0]


def layout(root, config: str = "retrieval") -> bb.Layout:
  return bb.Layout(root, f"lsmdc/{config}", video_dirs=(VIDEO_DIR, ""))


def clip_path(lay: bb.Layout, clip_id: str) -> str:
  """The clip file <clip_id>.<avi|mp4|...> in any folder (avi/<movie>/ as the scripts write it,
  <movie>/ directly in manual_dir, ...); avi/<movie>/<clip>.avi when absent."""
  return lay.video(clip_id, os.path.join(lay.root, VIDEO_DIR, movie_of(clip_id),
                                         f"{clip_id}.avi"))


def read_rows(path: pathlib.Path, kind: str):
  """(line, row) of a header-less LSMDC tsv with the columns of `kind`; all required."""
  cols = COLUMNS[kind]
  return bb.read_csv(path, cols, delimiter="\t", fieldnames=cols)


def retrieval_records(path: pathlib.Path, root: bb.Layout) -> list[bb.VideoRecord]:
  """One record per clip; `captions` = every sentence of the clip, in file order."""
  captions: dict[str, list[str]] = {}
  for _, row in read_rows(path, "retrieval"):
    captions.setdefault(row["clip_id"].strip(), []).append(row["sentence"].strip())
  return [bb.VideoRecord(key=clip, video_path=clip_path(root, clip), fields=dict(captions=caps))
          for clip, caps in captions.items()]


def shuffle_choices(choices: list[str], seed_text: str) -> tuple[list[str], int]:
  """A fixed permutation per question (correct answer first in, uniform position out)."""
  perm = np.random.default_rng(zlib.crc32(seed_text.encode())).permutation(len(choices))
  return [choices[i] for i in perm], int(np.flatnonzero(perm == 0)[0])


def mc_records(path: pathlib.Path, root: bb.Layout, *, test: bool) -> list[bb.VideoRecord]:
  """One record per question. The public test file gives the 1-based answer index; in
  train/valid the correct sentence comes first, so those choices are shuffled deterministically."""
  out = []
  for line, row in read_rows(path, "mc_test" if test else "mc"):
    clip = row["clip_id"].strip()
    choices = [row[f"sentence{i}"].strip() for i in range(1, 6)]
    if test:
      answer = row["answer_index"].strip()
      if answer not in {"1", "2", "3", "4", "5"}:
        raise bb.AnnotationError(str(path), line, "answer_index", "a number between 1 and 5")
      answer = int(answer) - 1
    else:
      choices, answer = shuffle_choices(choices, f"{clip}#{line}")
    out.append(bb.VideoRecord(
        key=f"{clip}#{line}", video_path=clip_path(root, clip),
        fields=dict(question="", mc_choices=choices, mc_answer=answer, video_id=clip)))
  return out


def fib_records(path: pathlib.Path, root: bb.Layout) -> list[bb.VideoRecord]:
  """One record per clip; `fib` = its (sentence with the blank as '_____', answer) pairs."""
  items: dict[str, list[dict]] = {}
  for line, row in read_rows(path, "fib"):
    fill_in = row["fill_in"].strip()
    if not _BLANK_RUN.search(fill_in):
      raise bb.AnnotationError(str(path), line, "fill_in", "a sentence with a blank ('_____')")
    items.setdefault(row["clip_id"].strip(), []).append(
        dict(sentence=_BLANK_RUN.sub(BLANK, fill_in, count=1), answer=row["blank"].strip()))
  return [bb.VideoRecord(key=clip, video_path=clip_path(root, clip), fields=dict(fib=fib))
          for clip, fib in items.items()]



def records(root, config: str) -> dict[str, object]:
  """{split: records, or rl.Missing for a split whose annotation file is absent} of `config`."""
  lay = layout(root, config)

  def split_records(split: str) -> list[bb.VideoRecord]:
    path = pathlib.Path(lay.require(FILES[config][split], ANNOTATION_DIRS))
    if config == "retrieval":
      return retrieval_records(path, lay)
    if config == "mc":
      return mc_records(path, lay, test=split == "test")
    return fib_records(path, lay)

  return rl.per_split(FILES[config], split_records)


class Builder(bb.VideoDatasetBuilder):
  """LSMDC 2016 clips with retrieval / multiple-choice / fill-in-the-blank annotations."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://sites.google.com/site/describingmovies/"
  # Clips last 2-10 s (~4.8 s): 4 fps keeps ~20 frames, enough for the 3-16 frames papers sample.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="retrieval", fps=4.0, short_side=256,
                            description="Clips with all their descriptions (captions), 4 fps."),
      bb.VideoBuilderConfig(name="mc", fps=4.0, short_side=256,
                            description="Movie multiple-choice: 5 captions and the answer, 4 fps."),
      bb.VideoBuilderConfig(name="fib", fps=4.0, short_side=256,
                            description="Movie fill-in-the-blank: sentences with a blank, 4 fps."),
  ]

  def _features(self):
    config = self.builder_config.name
    if config == "retrieval":
      return bb.caption_features()
    if config == "mc":
      return bb.mc_features()
    text = tfds.features.Text()
    return {"fib": tfds.features.Sequence({"sentence": text, "answer": text})}

  def _split_records(self, manual_dir: str):
    return records(pathlib.Path(manual_dir), self.builder_config.name)
