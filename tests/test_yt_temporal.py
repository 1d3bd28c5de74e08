"""yt_temporal beside the other pre-training corpora: listed as a builder, usable in a mixture
entry (VIOLET's WebVid + CC3M + YT-Temporal mix), and its streamed windows reach the sharded
frame extraction exactly as a build would decode them (no decoding here: placeholder videos)."""
import gzip
import json

from vlx import cli
from vlx.data import builder_base as bb
from vlx.data import extract_frames, layout_testing, mixture


def test_listed_and_usable_in_a_mixture():
  assert "yt_temporal" in cli.builder_names()
  assert mixture.parse_entry("yt_temporal/lite:0.5") == mixture.Entry("yt_temporal", "lite", 0.5)


def test_extract_frames_sees_the_windows(tmp_path, monkeypatch):
  monkeypatch.setenv(bb.REPORT_ENV, str(tmp_path / "reports"))
  words = [{"word": w, "time": t} for t, w in
           [(0.0, "one"), (1.0, "two"), (2.0, "three"), (12.0, "four"), (13.0, "five"),
            (14.0, "six")]]
  lines = [{"info": {"id": "kept", "duration": 20}, "subtitles": words},
           {"info": {"id": "gone", "duration": 20}, "subtitles": words}]
  (tmp_path / "m/yttemporal180m").mkdir(parents=True)
  with gzip.open(tmp_path / "m/yttemporal180m/yttemporal180m_042of100.jsonl.gz", "wt") as f:
    f.write("".join(json.dumps(x) + "\n" for x in lines))
  layout_testing.touch([tmp_path / "m/yttemporal180m/videos/kept.webm"])
  got = extract_frames.run_split_generators("yt_temporal", "default", str(tmp_path / "m"))
  assert [(b, split, cfg.name) for b, split, cfg, _ in got] == [("yt_temporal", "train",
                                                                 "default")]
  recs = got[0][3]
  assert [(r.key, r.start, r.end, r.fields["captions"]) for r in recs] == [
      ("kept:00000", 0.0, 10.0, ["one two three"]), ("kept:00001", 12.0, 20.0, ["four five six"]),
      ("gone:missing", None, None, [])]
  assert recs[0].video_path.endswith("kept.webm")
  assert recs[2].video_path == str(tmp_path / "m/videos/gone.mp4")   # named in the report
