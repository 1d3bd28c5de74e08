"""msrvtt: MSR-VTT (Xu et al. 2016) for text-video retrieval, MSRVTT-QA and MSRVTT-MC.

Reads `manual_dir` in the layout the datasets are released in (see MANUAL_DOWNLOAD_INSTRUCTIONS);
annotation files and videos are found wherever the archives put them (release_layout.Layout), so
the 2016 release, CLIP4Clip's `msrvtt_data/` + `MSRVTT/videos/all/` and the QA / MC files can be
unpacked as they come, with or without their top folder. A split whose files are absent is not
built (a warning names them): the 2016 release alone builds val and test_full. Configs:
  retrieval  one example per video with all its captions. Splits train_9k / train_7k (video lists
             MSRVTT_train.9k.csv / .7k.csv, captions from the official json), val (the official
             validate split, 497 videos), test_1ka (JSFusion's 1000 videos x 1 caption: the test
             set of ALPRO, All-in-one, CLIP4Clip ...) and test_full (official test, 2990 videos).
  qa         MSRVTT-QA (Xu et al. 2017): one example per video, its question/answer pairs in `qa`.
  mc         MSRVTT-MC (JSFusion, Yu et al. 2018): one example per question, 5 captions, answer.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Iterable

import numpy as np
from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

CAPTION_FILES = ("train_val_videodatainfo.json", "test_videodatainfo.json")
MERGED_CAPTION_FILE = "MSRVTT_data.json"   # the retrieval papers' merge of the two files above
TRAIN_LISTS = {"train_9k": "MSRVTT_train.9k.csv", "train_7k": "MSRVTT_train.7k.csv"}
TEST_1KA = "MSRVTT_JSFUSION_test.csv"
QA_FILES = {"train": "train_qa.json", "val": "val_qa.json", "test": "test_qa.json"}
MC_CSV = "MSR_MC_test.csv"               # JSFusion release (tab-separated)
MC_JSONL = "msrvtt_mc_test.jsonl"        # the same questions as ClipBERT / All-in-one ship them
VIDEO_DIRS = ("TrainValVideo", "TestVideo", "videos/all", "videos", "all")
# Where the archives put the annotation files (preferred when a name is found twice).
ANNOTATION_DIRS = ("", "msrvtt_data", "annotation", "MSRVTT-QA", "data")
FIRST_TEST_VIDEO = 7010
NUM_CHOICES = 5
_VID = re.compile(r"^(?:video|msr)?(\d+)$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MSR-VTT (Xu et al. 2016, Microsoft Research): the 2016 challenge release, i.e. train_val_videos.zip
(TrainValVideo/), test_videos.zip (TestVideo/), train_val_annotation.zip
(train_val_videodatainfo.json) and test_videodatainfo.json; or the retrieval papers' copy
(MSRVTT.zip of CLIP4Clip / Frozen: videos/all/ + msrvtt_data/ with MSRVTT_data.json and the split
csv files). Retrieval splits: MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv
(JSFusion, Yu et al. 2018, as CLIP4Clip distributes them). MSRVTT-QA (Xu et al. 2017,
https://github.com/xudejing/video-question-answering): train_qa.json, val_qa.json, test_qa.json.
MSRVTT-MC: JSFusion's MSR_MC_test.csv (or msrvtt_mc_test.jsonl as ClipBERT ships it).
Put in manual_dir:

  manual_dir/
    TrainValVideo/video0.mp4 ... video7009.mp4   (or all 10k in videos/ or videos/all/)
    TestVideo/video7010.mp4 ... video9999.mp4
    train_val_videodatainfo.json  test_videodatainfo.json   (or MSRVTT_data.json)
    MSRVTT_train.9k.csv  MSRVTT_train.7k.csv  MSRVTT_JSFUSION_test.csv     (config retrieval)
    train_qa.json  val_qa.json  test_qa.json                                (config qa)
    MSR_MC_test.csv                                                         (config mc)

Any of these may sit in folders of their own, as the archives unpack them (msrvtt_data/...csv,
MSRVTT/videos/all/video0.mp4, MSRVTT-QA/train_qa.json; searched 5 folder levels deep); videos may
be .mp4 .avi .webm .mkv .mov .m4v .flv. Splits whose files are absent are not built (the 2016
release alone gives val and test_full). Missing videos are skipped and counted, not fatal.
"""


@dataclasses.dataclass
class MsrvttConfig(bb.VideoBuilderConfig):
  """task: which annotations the config reads (retrieval | qa | mc)."""
  task: str = "retrieval"


# ---------------------------------------------------------------------------------------------
# Annotation parsers (pure functions of the files; the builder and the tests call them).


def video_name(value, *, file: str, line: int | None, field: str) -> str:
  """'video123' from 'video123', 123, '123' or JSFusion's 'msr123'."""
  m = _VID.match(str(value).strip())
  if isinstance(value, bool) or m is None:
    raise bb.AnnotationError(file, line, field, f"a video id like video123 or 123, got {value!r}")
  return f"video{int(m.group(1))}"


def read_videodatainfo(paths: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
  """({video: [captions in file order]}, {video: official split}) from the official json files
  ({"videos": [{video_id, split, ...}], "sentences": [{video_id, caption, sen_id}]})."""
  captions: dict[str, list[str]] = collections.defaultdict(list)
  splits: dict[str, str] = {}
  for path in paths:
    data = bb.read_json(path)
    if not isinstance(data, dict):
      raise bb.AnnotationError(path, None, "videos", "a JSON object with 'videos' and 'sentences'")
    videos = bb.require(data, "videos", file=path, line=None, expected="a list of videos")
    sentences = bb.require(data, "sentences", file=path, line=None,
                           expected="a list of sentences")
    for i, v in enumerate(videos):
      vid = video_name(bb.entry_field(v, i, "video_id", file=path, prefix="videos"),
                       file=path, line=None, field=f"videos[{i}].video_id")
      splits[vid] = str(bb.entry_field(v, i, "split", file=path, prefix="videos",
                                    expected="train, validate or test"))
    for i, s in enumerate(sentences):
      vid = video_name(bb.entry_field(s, i, "video_id", file=path, prefix="sentences"),
                       file=path, line=None, field=f"sentences[{i}].video_id")
      caption = bb.entry_field(s, i, "caption", file=path, prefix="sentences",
                               expected="a caption")
      captions[vid].append(str(caption).strip())
  return dict(captions), splits


def read_video_list(path: str) -> list[str]:
  """Video ids of a MSRVTT_train.*k.csv (column video_id), in file order."""
  return [video_name(row["video_id"], file=path, line=line, field="video_id")
          for line, row in bb.read_csv(path, ["video_id"])]


def read_jsfusion_test(path: str) -> dict[str, list[str]]:
  """{video: [sentence, ...]} of MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence)."""
  out: dict[str, list[str]] = collections.defaultdict(list)
  for line, row in bb.read_csv(path, ["video_id", "sentence"]):
    out[video_name(row["video_id"], file=path, line=line, field="video_id")].append(
        row["sentence"].strip())
  return dict(out)


def read_qa(path: str) -> dict[str, list[dict]]:
  """{video: [{question, answer, qtype}]} of an MSRVTT-QA file, videos in first-seen order.

  MSRVTT-QA has no question type of its own (its category_id is the video's MSR-VTT category),
  so qtype is '' and the pipeline types questions by their first word.
  """
  data = bb.read_json(path)
  if not isinstance(data, list):
    raise bb.AnnotationError(path, None, "(top level)", "a JSON list of QA entries")
  out: dict[str, list[dict]] = collections.defaultdict(list)
  for i, entry in enumerate(data):
    q = bb.entry_field(entry, i, "question", file=path, expected="a question")
    a = bb.entry_field(entry, i, "answer", file=path, expected="an answer")
    v = bb.entry_field(entry, i, "video_id", file=path, expected="a video id")
    vid = video_name(v, file=path, line=None, field=f"[{i}].video_id")
    out[vid].append(dict(question=str(q).strip(), answer=str(a).strip(), qtype=""))
  return dict(out)


def _answer_index(value, *, file: str, line: int | None, field: str) -> int:
  try:
    answer = int(str(value).strip())
  except ValueError:
    answer = -1
  if not 0 <= answer < NUM_CHOICES:
    raise bb.AnnotationError(file, line, field, f"an option index 0-{NUM_CHOICES - 1}, "
                             f"got {value!r}")
  return answer


def read_mc(path: str) -> list[dict]:
  """[{key, video, choices(5), answer}] of MSR_MC_test.csv (tab) or msrvtt_mc_test.jsonl."""
  out = []
  if path.endswith(".jsonl"):
    for line, row in bb.read_jsonl(path, ["clip_name", "options", "answer"]):
      options = row["options"]
      if not isinstance(options, list) or len(options) != NUM_CHOICES:
        raise bb.AnnotationError(path, line, "options", f"a list of {NUM_CHOICES} captions")
      out.append(dict(
          key=str(row.get("qid", f"mc{line}")),
          video=video_name(row["clip_name"], file=path, line=line, field="clip_name"),
          choices=[str(o).strip() for o in options],
          answer=_answer_index(row["answer"], file=path, line=line, field="answer")))
    return out
  cols = [f"a{k}" for k in range(1, NUM_CHOICES + 1)]
  for line, row in bb.read_csv(path, ["vid_key", *cols, "answer"], delimiter="\t"):
    out.append(dict(
        key=str(row.get("key") or f"mc{line}"),
        video=video_name(row["vid_key"], file=path, line=line, field="vid_key"),
        choices=[row[c].strip() for c in cols],
        answer=_answer_index(row["answer"], file=path, line=line, field="answer")))
  return out


# ---------------------------------------------------------------------------------------------
# Records per split.


def layout(root: str, name: str = "msrvtt") -> bb.Layout:
  """The manual dir indexed once: annotation files and videos wherever the archives put them."""
  return bb.Layout(root, name, video_dirs=VIDEO_DIRS)


def _caption_source(lay: bb.Layout, need: str = "all") -> tuple[dict[str, list[str]],
                                                                 dict[str, str], str]:
  """(captions, official splits, file to blame) from the official pair (or the one of it that
  `need` asks for: 'train_val' | 'test') or MSRVTT_data.json; FilesMissing names what to add."""
  official = [lay.find(n, ANNOTATION_DIRS) for n in CAPTION_FILES]
  if all(official):
    return (*read_videodatainfo(official), official[0])
  merged = lay.find(MERGED_CAPTION_FILE, ANNOTATION_DIRS)
  if merged:
    return (*read_videodatainfo([merged]), merged)
  wanted = {"train_val": [0], "test": [1]}.get(need, [0, 1])
  if all(official[i] for i in wanted):
    return (*read_videodatainfo([official[i] for i in wanted]), official[wanted[0]])
  raise rl.FilesMissing(lay.builder, lay.root, [
      " + ".join(CAPTION_FILES[i] for i in wanted) + f" (or {MERGED_CAPTION_FILE})"])


def retrieval_records(lay: bb.Layout) -> dict[str, object]:
  """{split: records or bb.Missing(files)} of the retrieval config."""

  def record(vid: str, caps: list[str], file: str) -> bb.VideoRecord:
    if not caps:
      raise bb.AnnotationError(file, None, vid, "at least one caption for every listed video")
    return bb.VideoRecord(key=vid, video_path=_video_path(lay, vid),
                          fields=dict(video_id=vid, captions=list(caps)))

  def split_records(split: str) -> list[bb.VideoRecord]:
    if split in TRAIN_LISTS:
      path = lay.find(TRAIN_LISTS[split], ANNOTATION_DIRS)
      try:
        captions, _, _ = _caption_source(lay, "train_val" if split == "train_7k" else "all")
      except rl.FilesMissing as e:   # name every file the split needs
        raise rl.FilesMissing(lay.builder, lay.root,
                              ([] if path else [TRAIN_LISTS[split]]) + e.files) from None
      if path is None:
        raise rl.FilesMissing(lay.builder, lay.root, [TRAIN_LISTS[split]])
      return [record(v, captions.get(v, []), path) for v in _unique(read_video_list(path))]
    if split == "test_1ka":
      path = lay.require(TEST_1KA, ANNOTATION_DIRS)
      return [record(v, caps, path) for v, caps in read_jsfusion_test(path).items()]
    official = "validate" if split == "val" else "test"
    captions, splits, info = _caption_source(lay, "train_val" if split == "val" else "test")
    return [record(v, captions.get(v, []), info) for v in _sorted_ids(splits)
            if splits[v] == official]

  return rl.per_split(TASK_SPLITS["retrieval"], split_records)


def qa_records(lay: bb.Layout) -> dict[str, object]:
  def split_records(split: str) -> list[bb.VideoRecord]:
    path = lay.require(QA_FILES[split], ANNOTATION_DIRS)
    return [bb.VideoRecord(key=vid, video_path=_video_path(lay, vid),
                           fields=dict(video_id=vid, qa=pairs))
            for vid, pairs in read_qa(path).items()]
  return rl.per_split(QA_FILES, split_records)


def mc_records(lay: bb.Layout) -> dict[str, object]:
  def split_records(_: str) -> list[bb.VideoRecord]:
    path = lay.require((MC_CSV, MC_JSONL), ANNOTATION_DIRS)
    records, seen = [], set()
    for q in read_mc(path):
      key = q["key"] if q["key"] not in seen else f"{q['key']}_{len(seen)}"
      seen.add(key)
      records.append(bb.VideoRecord(
          key=key, video_path=_video_path(lay, q["video"]),
          fields=dict(video_id=q["video"], question="", mc_choices=q["choices"],
                      mc_answer=np.int32(q["answer"]))))
    return records
  return rl.per_split(["test"], split_records)


def _video_path(lay: bb.Layout, vid: str) -> str:
  """The video file of `vid` anywhere under the manual dir (any extension); when absent, its
  place in the official release (TrainValVideo/ or TestVideo/), which the build reports."""
  folder = VIDEO_DIRS[0] if int(vid[len("video"):]) < FIRST_TEST_VIDEO else VIDEO_DIRS[1]
  return lay.video(vid, os.path.join(lay.root, folder, f"{vid}.mp4"))


def _unique(ids: list[str]) -> list[str]:
  return list(dict.fromkeys(ids))


def _sorted_ids(splits: dict[str, str]) -> list[str]:
  return sorted(splits, key=lambda v: int(v[len("video"):]))


TASK_SPLITS = {"retrieval": ("train_9k", "train_7k", "val", "test_1ka", "test_full"),
               "qa": tuple(QA_FILES), "mc": ("test",)}
_RECORDS = {"retrieval": retrieval_records, "qa": qa_records, "mc": mc_records}


class Builder(bb.VideoDatasetBuilder):
  """MSR-VTT retrieval / MSRVTT-QA / MSRVTT-MC from the official files in manual_dir."""

  code_path = epath.Path(__file__)   # TFDS needs the module file (see moving_shapes)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = ("https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-"
              "description-dataset-for-bridging-video-and-language/")
  # 10-30 s clips at 2 fps: 20-60 frames, enough for the 8-16 frames ALPRO / All-in-one sample.
  BUILDER_CONFIGS = [
      MsrvttConfig(name="retrieval", task="retrieval", fps=2.0, short_side=256,
                   description="Text-video retrieval: train_9k/train_7k/val/test_1ka/test_full."),
      MsrvttConfig(name="qa", task="qa", fps=2.0, short_side=256,
                   description="MSRVTT-QA open-ended QA (train/val/test), grouped per video."),
      MsrvttConfig(name="mc", task="mc", fps=2.0, short_side=256,
                   description="MSRVTT-MC: 5 candidate captions per test video."),
  ]

  def _features(self):
    task = self.builder_config.task
    if task == "retrieval":
      return bb.caption_features()
    return bb.qa_features() if task == "qa" else bb.mc_features()

  def _split_records(self, manual_dir: str):
    task = self.builder_config.task
    return _RECORDS[task](layout(manual_dir, f"msrvtt/{task}"))
