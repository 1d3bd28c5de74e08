"""yt_temporal builder: the release's jsonl(.gz) shards and per-video JSON, ASR words grouped
into 10-s windows, cleaned captions aligned to the timed words, missing / corrupt / no-text
counted, layouts as the files unpack."""
import gzip
import json
import os
import pathlib

import pytest

from data_builders.yt_temporal import yt_temporal_dataset_builder as yt
from vlx.data import builder_base as bb
from vlx.data import layout_testing, testing

SHARD0 = "yttemporal180m_000of100.jsonl.gz"
SHARD1 = "yttemporal180m_001of100.jsonl"


def _video(vid, words, clean=None, duration=12):
  """One annotation object in the release's format (info / subtitles / denoised)."""
  obj = {"info": {"id": vid, "title": f"title of {vid}", "duration": duration},
         "subtitles": [{"word": w, "time": t} for t, w in words], "_te": 0.1}
  if clean is not None:
    obj["denoised"] = [{"noisyasr": " ".join(w for _, w in words), "cleanasr": c,
                        "ctx_ppl": 50.0} for c in clean]
  return obj


# vidA: window 1 = [0.5, 10.5) (10 words; '&gt;&gt;' and '[Music]' are debris), window 2 =
# [11, 21) cut to [11, 12) at info.duration (3 words), window 3 starts after the end (dropped).
VID_A = _video("vidA", [(0.5, "guys"), (1.0, "this"), (1.5, "&gt;&gt;"), (1.5, "is"), (2.0, "a"),
                        (2.5, "delicious"), (3.0, "sweet"), (3.5, "onion"), (4.0, "[Music]"),
                        (9.0, "let's"), (9.5, "do"), (10.0, "it"), (11.0, "full"),
                        (11.5, "blast"), (11.8, "okay"), (21.5, "bye")],
               ["Guys, this is a delicious sweet onion.", "Let's do it! Full blast. Okay. Bye!"])
VID_B = _video("vidB", [(1.0, "chop"), (2.0, "the"), (3.0, "onion"), (4.0, "finely")])  # raw ASR
VID_C = _video("vidC", [(1.0, "broken"), (2.0, "file"), (3.0, "here")], ["Broken file here."])
VID_D = _video("vidD", [(0.0, "never"), (1.0, "downloaded"), (2.0, "video")])
VID_E = _video("vidE", [(0.2, "hello"), (0.4, "there"), (0.6, "friends"), (11.0, "uh")],
               ["Hello there, friends. Uh."])   # 2nd window: 1 word, no usable text
VID_F = _video("vidF", [], ["Nothing said."])   # no timed ASR words
VID_G = _video("vidG", [(5.0, "fold"), (6.0, "the"), (7.0, "paper")], ["Fold the paper."])


def _write_jsonl(path: pathlib.Path, objs) -> None:
  text = "".join(json.dumps(o) + "\n" for o in objs)
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == ".gz":
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(text)
  else:
    path.write_text(text)


class YTTemporalTest(testing.VideoBuilderTestCase):
  DATASET_CLASS = yt.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["default", "raw_asr"]
  SPLITS = {"train": 5}
  EXPECTED_REPORTS = {"train": dict(annotated=6, found=4, missing=1, corrupt=1, records=7,
                                    examples=5, failed_clips=0)}

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    _write_jsonl(root / SHARD0, [VID_A, VID_C, VID_D, VID_F])
    _write_jsonl(root / SHARD1, [VID_B, VID_E, VID_A])   # vidA again: a duplicate id
    # All-in-one's per-video layout for vidG.
    (root / "YTTemporal/videos/subset_0/annotations").mkdir(parents=True)
    (root / "YTTemporal/videos/subset_0/annotations/vidG.json").write_text(json.dumps(VID_G))
    clip = dict(num_frames=24, height=32, width=48, fps=2)   # 12 s
    testing.write_video(root / "videos/vidA.mp4", seed=0, **clip)
    testing.write_video(root / "videos/part1/vidB.webm", seed=1, **clip)
    testing.write_video(root / "videos/vidE.mp4", seed=2, **clip)
    testing.write_video(root / "YTTemporal/videos/subset_0/data/vidG.mkv", seed=3, **clip)
    testing.write_corrupt(root / "videos/vidC.mp4")

  def check_examples(self, config_name, split, examples):
    got = {(e["video_id"].decode(), round(float(e["start"]), 3)): (
        round(float(e["end"]), 3), e["captions"][0].decode(), len(e["video"]))
        for e in examples}
    clean = config_name == "default"
    # 2 fps from start while < end: [0.5, 10.5) -> 0.5 ... 10.0 = 20 frames.
    self.assertEqual(got, {
        ("vidA", 0.5): (10.5, "Guys, this is a delicious sweet onion. Let's do it!" if clean
                        else "guys this is a delicious sweet onion let's do it", 20),
        ("vidA", 11.0): (12.0, "Full blast. Okay." if clean else "full blast okay", 2),
        ("vidB", 1.0): (11.0, "chop the onion finely", 20),
        ("vidE", 0.2): (10.2, "Hello there, friends." if clean else "hello there friends", 20),
        ("vidG", 5.0): (12.0, "Fold the paper." if clean else "fold the paper", 14)})
    stats = yt.LAST_TEXT_REPORTS[("yt_temporal", config_name)]
    self.assertEqual(
        (stats.annotations, stats.duplicates, stats.no_asr, stats.missing_videos, stats.windows,
         stats.no_text, stats.past_end, stats.raw_asr, stats.clips),
        (8, 1, 1, 1, 8, 1, 1, 1 if clean else 0, 6))
    path = os.path.join(os.environ[bb.REPORT_ENV], f"yt_temporal-{config_name}-train.captions.json")
    with open(path) as f:
      written = json.load(f)
    self.assertEqual((written["no_text"], written["past_end"], written["dropped"]), (1, 1, 2))


# ----------------------------------------------------------------------------- unit tests

def test_align_and_windows():
  words = ["so", "lets", "make", "pasta", "uh", "today"]
  clean = ["So,", "let's", "make", "pasta", "today!", "Enjoy."]
  # 'uh' was removed by the cleaner; 'Enjoy.' has no ASR word: it goes with 'today'.
  assert yt.align(words, clean) == [["So,"], ["let's"], ["make"], ["pasta"], [],
                                    ["today!", "Enjoy."]]
  assert yt.align(["a", "b"], []) == [[], []]
  assert yt.windows([0.0, 1.0, 9.9, 10.0, 25.0, 26.0], 10.0) == [(0, 3), (3, 4), (4, 6)]
  assert yt.windows([], 10.0) == []


def test_max_clips_and_asr_fallback():
  words = [(float(t), f"w{t}") for t in range(0, 100)]     # 10 windows of 10 words
  video = yt.parse_video(_video("v", words, ["W0 w1"], duration=0), "f.jsonl", 1)
  stats = yt.TextStats()
  config = yt.YTTemporalConfig(name="t", max_clips=4)
  got = yt.clips(video, config, stats)
  assert [(k, s, e) for k, s, e, _ in got] == [(0, 0.0, 10.0), (3, 30.0, 40.0),
                                               (6, 60.0, 70.0), (9, 90.0, 100.0)]
  # the cleaned text covers the first window only: the others fall back to the raw words
  assert got[0][3] == "W0 w1" and got[1][3] == " ".join(f"w{t}" for t in range(30, 40))
  assert (stats.windows, stats.capped, stats.raw_asr) == (10, 6, 9)


def test_malformed_annotations_are_named(tmp_path, monkeypatch):
  monkeypatch.setenv(bb.REPORT_ENV, str(tmp_path / "reports"))
  layout_testing.touch([tmp_path / "videos/vidA.mp4"])
  shard = tmp_path / SHARD1
  cases = [("not json\n", 1, "<json>", "one JSON object per line"),
           (json.dumps(VID_A) + "\n" + json.dumps({"info": {}, "subtitles": []}) + "\n", 2,
            "info.id", "the YouTube video id"),
           (json.dumps({"info": {"id": "x"}, "subtitles": {"word": "a"}}) + "\n", 1, "subtitles",
            "a list of {word, time}"),
           (json.dumps(_video("x", [(1.0, "a"), ("soon", "b")])) + "\n", 1, "subtitles[1].time",
            "a number of seconds"),
           (b"\xff\xfe not utf-8\n", 1, "<text>", "UTF-8 JSON lines")]
  for text, line, field, expected in cases:
    shard.write_bytes(text if isinstance(text, bytes) else text.encode())
    with testing.raises_annotation_error(shard, line, field, expected):
      layout_testing.split_records(yt.Builder, "default", tmp_path)


def test_truncated_gzip_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(bb.REPORT_ENV, str(tmp_path / "reports"))
  shard = tmp_path / SHARD0
  _write_jsonl(shard, [_video(f"v{i:03d}", [(0.0, "a"), (1.0, "b"), (2.0, "c")],
                              [f"text {i} " * 200]) for i in range(300)])
  data = shard.read_bytes()
  shard.write_bytes(data[:len(data) // 2])
  layout_testing.touch([tmp_path / "videos/v000.mp4"])
  recs = layout_testing.split_records(yt.Builder, "default", tmp_path)["train"]
  assert recs[0].key == "v000:00000" and 1 < len(recs) < 300   # the lines before the cut
  assert yt.LAST_TEXT_REPORTS[("yt_temporal", "default")].unreadable_shards == [SHARD0]
  assert f"unreadable shards: {SHARD0}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- release layouts

def _official(root: pathlib.Path, shard: str = SHARD0) -> None:
  _write_jsonl(root / shard, [VID_A, VID_D])
  layout_testing.touch([root / "videos/vidA.mp4"])


@pytest.mark.parametrize("layout", ["official", "gunzipped", "both", "nested", "elsewhere",
                                    "ytdlp_names", "allinone", "grover"])
def test_release_layouts(tmp_path, monkeypatch, layout):
  """The shards at the top (gzipped, gunzipped or both), everything inside a folder of its own,
  shards and videos in folders of other names, yt-dlp's default '<title> [<id>].<ext>' names,
  All-in-one's per-video JSON beside data/, and
  MERLOT's <id>.grover.json: vidA's 2 windows + 1 record for the missing vidD."""
  monkeypatch.setenv(bb.REPORT_ENV, str(tmp_path / "reports"))
  root = tmp_path / "m"
  if layout in ("official", "nested"):
    _official(root)
  elif layout == "gunzipped":
    _official(root, "yttemporal180m_000of100.jsonl")
  elif layout == "both":   # an interrupted gunzip: the .gz is read, not the partial .jsonl
    _official(root)
    (root / "yttemporal180m_000of100.jsonl").write_text(json.dumps(VID_A)[:100])
  elif layout == "elsewhere":
    _write_jsonl(root / "yttemporal180m/annotations" / SHARD0, [VID_A, VID_D])
    layout_testing.touch([root / "downloads/part0/vidA.WEBM"])
  elif layout == "ytdlp_names":
    _write_jsonl(root / SHARD0, [VID_A, VID_D])
    layout_testing.touch([root / "downloads/Sweet onion pasta [vidA].mkv",
                          root / "downloads/Other video [vidX].mp4"])
  elif layout == "allinone":
    for vid, obj in (("vidA", VID_A), ("vidD", VID_D)):
      path = root / "YTTemporal/videos/subset_3/annotations" / f"{vid}.json"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(obj))
    layout_testing.touch([root / "YTTemporal/videos/subset_3/data/vidA.mp4"])
  else:
    (root / "example_video").mkdir(parents=True)
    for vid, obj in (("vidA", VID_A), ("vidD", VID_D)):
      obj = {k: v for k, v in obj.items() if k != "info"}   # the id from the file name
      (root / "example_video" / f"{vid}.grover.json").write_text(json.dumps(obj))
    layout_testing.touch([root / "example_video/vidA.mp4",
                          root / "example_video/vidA.info.json"])
  if layout == "nested":
    layout_testing.nest(root, "yttemporal180m")
  assert layout_testing.summary(yt.Builder, "default", root) == {"train": (3, 2)}
  stats = yt.LAST_TEXT_REPORTS[("yt_temporal", "default")]
  assert (stats.annotations, stats.duplicates) == (2, 0)


def test_no_annotations_is_one_line(tmp_path):
  layout_testing.touch([tmp_path / "videos/vidA.mp4", tmp_path / "ids.txt"])
  got = layout_testing.summary(yt.Builder, "default", tmp_path)
  assert got == {"train": f"missing: {yt.OFFICIAL_SHARD} (the release's .jsonl[.gz] shards) or "
                          "<id>.grover.json / annotations/<id>.json"}
