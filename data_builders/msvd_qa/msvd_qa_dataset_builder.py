"""msvd_qa: MSVD-QA (Xu et al. 2017) open-ended video QA on the MSVD clips (Chen & Dolan 2011).

One example per clip with all its question/answer pairs in `qa`; splits train / val / test as the
QA files give them (test is the paper's test set: 13,157 QA pairs on 520 clips). The QA json
refers to clips by a 1-based index N (vidN); youtube_mapping.txt maps the YouTube clip names of
YouTubeClips/*.avi to those vidN names. MSVD-QA has no question type of its own: qtype is ''
(the pipeline types questions by their first word, as the papers report what/who/how/...).
"""
from __future__ import annotations

import collections
import os
import re

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

QA_FILES = {"train": "train_qa.json", "val": "val_qa.json", "test": "test_qa.json"}
MAPPING_FILE = "youtube_mapping.txt"
CLIP_DIR = "YouTubeClips"
RENAMED_DIR = "video"       # the MSVD-QA authors' own copy: video/vid1.avi ... vid1970.avi
_VID = re.compile(r"^vid(\d+)$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MSVD clips: YouTubeClips.tar from the Microsoft Research Video Description Corpus
(https://www.cs.utexas.edu/users/ml/clamp/videoDescription/ ; 1970 .avi clips named
<youtube id>_<start>_<end>.avi). MSVD-QA annotations (https://github.com/xudejing/video-question-
answering -> https://data.mendeley.com/datasets/h5j7cpwnvn): train_qa.json, val_qa.json,
test_qa.json and youtube_mapping.txt. Put in manual_dir:

  manual_dir/
    YouTubeClips/-4wsuPCjDBc_5_15.avi ...   (all 1970 clips as released)
    youtube_mapping.txt                     ("<clip name> vid<N>" per line)
    train_qa.json val_qa.json test_qa.json

Files are found by name anywhere under manual_dir (5 folder levels: MSVD-QA/train_qa.json, the
clips unpacked without YouTubeClips/, everything in a folder of its own ...); splits whose QA
file is absent are not built. A copy renamed to video/vid<N>.avi is read too. Missing clips are
skipped and counted, not fatal.
"""



def read_mapping(path: str) -> dict[int, str]:
  """{N: clip name} from youtube_mapping.txt ("<clip name> vid<N>" per line)."""
  out: dict[int, str] = {}
  with open(path, encoding="utf-8") as f:
    for line, text in enumerate(f, 1):
      parts = text.split()
      if not parts:
        continue
      m = _VID.match(parts[-1]) if len(parts) == 2 else None
      if m is None:
        raise bb.AnnotationError(path, line, "vid", f"'<clip name> vid<N>', got {text.strip()!r}")
      out[int(m.group(1))] = parts[0]
  return out



def read_qa(path: str) -> dict[int, list[dict]]:
  """{N: [{question, answer, qtype: ''}]} of an MSVD-QA file, clips in first-seen order."""
  data = bb.read_json(path)
  if not isinstance(data, list):
    raise bb.AnnotationError(path, None, "(top level)", "a JSON list of QA entries")
  out: dict[int, list[dict]] = collections.defaultdict(list)
  for i, entry in enumerate(data):
    q = bb.entry_field(entry, i, "question", file=path, expected="a question")
    a = bb.entry_field(entry, i, "answer", file=path, expected="an answer")
    v = bb.entry_field(entry, i, "video_id", file=path, expected="a clip index N (vidN)")
    try:
      n = int(v)
    except (TypeError, ValueError):
      raise bb.AnnotationError(path, None, f"[{i}].video_id",
                               f"an integer clip index, got {v!r}") from None
    out[n].append(dict(question=str(q).strip(), answer=str(a).strip(), qtype=""))
  return dict(out)


ANNOTATION_DIRS = ("", "MSVD-QA", "MSVD")


def layout(root) -> bb.Layout:
  return bb.Layout(root, "msvd_qa", video_dirs=(CLIP_DIR, RENAMED_DIR, ""))


def records_for(lay: bb.Layout, split: str, mapping: dict[int, str], mapping_path: str
                ) -> list[bb.VideoRecord]:
  """One record per clip of `split`; a clip index the mapping lacks is an annotation error.
  A clip is found by its YouTube name (YouTubeClips/) or, failing that, as vid<N> (the
  authors' renamed copy), in any folder."""
  path = lay.require(QA_FILES[split], ANNOTATION_DIRS)
  out = []
  for n, pairs in read_qa(path).items():
    if n not in mapping:
      raise bb.AnnotationError(path, None, "video_id",
                               f"clip indices listed in {mapping_path}; vid{n} is not")
    clip = mapping[n]
    video = lay.video([clip, f"vid{n}"], os.path.join(lay.root, CLIP_DIR, f"{clip}.avi"))
    out.append(bb.VideoRecord(key=f"vid{n}", video_path=video,
                              fields=dict(video_id=clip, qa=pairs)))
  return out


class Builder(bb.VideoDatasetBuilder):
  """MSVD-QA from the official files in manual_dir."""

  code_path = epath.Path(__file__)   # TFDS needs the module file (see moving_shapes)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/xudejing/video-question-answering"
  # Clips last ~10 s (1-60 s): 2 fps keeps ~20 frames for the 8-16 the QA models sample.
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=2.0, short_side=256,
                            description="All QA pairs of a clip in one example; frames at 2 fps, "
                                        "256 px."),
  ]

  def _features(self):
    return bb.qa_features()

  def _split_records(self, manual_dir: str):
    lay = layout(manual_dir)
    mapping_path = lay.find(MAPPING_FILE, ANNOTATION_DIRS)
    if mapping_path is None:   # every split needs it
      return {split: rl.Missing((MAPPING_FILE,)) for split in QA_FILES}
    mapping = read_mapping(mapping_path)
    return rl.per_split(QA_FILES, lambda split: records_for(lay, split, mapping, mapping_path))
