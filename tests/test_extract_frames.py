"""Sharded, resumable frame extraction: an interrupted shard run + resume, then a build from the
cache, gives exactly the examples of a direct build (and does not need the videos any more)."""
import pathlib

import pytest
import tensorflow_datasets as tfds

from data_builders.video_text import video_text_dataset_builder as vt
from vlx.data import builder_base as bb
from vlx.data import extract_frames, frame_cache, testing


def _make_corpus(root: pathlib.Path) -> None:
  rows = ["video,caption,split"]
  for i in range(6):
    ext = (".mp4", ".webm", ".avi")[i % 3]
    testing.write_video(root / f"v{i}{ext}", num_frames=6, height=32, width=40, fps=6, seed=i)
    rows.append(f"v{i}{ext},clip {i},{'train' if i < 4 else 'val'}")
  testing.write_corrupt(root / "bad.mp4")
  rows += ["bad.mp4,corrupt,train", "gone.mp4,missing,train", "v0.mp4,second caption,train"]
  (root / "video_text.csv").write_text("\n".join(rows) + "\n")


def _examples(data_dir: pathlib.Path, manual: pathlib.Path) -> dict:
  b = vt.Builder(config="captions", data_dir=str(data_dir))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  out = {}
  for split in ("train", "val"):
    raw = b.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding()})
    for ex in tfds.as_numpy(raw):
      out[(split, ex["video_id"].decode())] = (list(ex["video"]), list(ex["captions"]),
                                               float(ex["duration"]))
  return out


def _shard_starting_with_a_good_clip(manual: pathlib.Path, cache: pathlib.Path) -> int:
  """Shards hash the clip's absolute path, so tmp_path decides them: pick a shard whose first
  clip decodes, so that killing it after one clip leaves exactly one cache entry."""
  first: dict[int, str] = {}

  def consume(_, split, cfg, records):
    s = bb.decode_settings(cfg, str(cache))
    for r in records:
      entry = frame_cache.entry_path(s.cache, r.video_path, r.start, r.end)
      first.setdefault(extract_frames.shard_of(entry, 2), pathlib.Path(r.video_path).name)

  extract_frames.run_split_generators("video_text", "captions", str(manual), consume)
  good = [k for k, name in sorted(first.items()) if name.startswith("v")]
  assert good, f"no shard starts with a decodable clip: {first}"
  return good[0]


def test_shards_and_resume_match_direct_build(tmp_path, capsys):
  manual, cache = tmp_path / "manual", tmp_path / "cache"
  _make_corpus(manual)
  env = dict(VLX_BUILD_REPORT_DIR=str(tmp_path / "reports"), VLX_BUILD_WORKERS="1",
             VLX_FRAME_CACHE=None)
  with testing.environ(**env):
    direct = _examples(tmp_path / "direct", manual)
    assert len(direct) == 6 and bb.last_report("video_text", "train")["corrupt"] == 1
    kw = dict(cache=str(cache), config="captions", manual_dir=str(manual), num_shards=2, workers=1)
    kill = _shard_starting_with_a_good_clip(manual, cache)
    rest = 1 - kill
    # Shard `kill` killed after one clip (plus a stray temp file, as a kill mid-write leaves).
    first = extract_frames.extract("video_text", shard_index=kill, max_videos=1, **kw)
    assert first["decoded"] == 1 and first["already_cached"] == 0
    (cache / "stray.vlxf.tmp123").parent.mkdir(parents=True, exist_ok=True)
    (cache / "stray.vlxf.tmp123").write_bytes(b"half")
    resumed = extract_frames.extract("video_text", shard_index=kill, **kw)
    assert resumed["already_cached"] == 1 and resumed["clips"] == first["clips"]
    other = extract_frames.extract("video_text", shard_index=rest, **kw)
    assert resumed["clips"] + other["clips"] == 8  # 6 videos + corrupt + missing, shared v0 once
    assert resumed["missing"] + other["missing"] == 1
    assert resumed["corrupt"] + other["corrupt"] == 1
    again = extract_frames.extract("video_text", shard_index=rest, **kw)
    assert again["already_cached"] == other["clips"] - other["missing"] and again["decoded"] == 0
    capsys.readouterr()
    extract_frames.main(["--builder", "video_text", "--config", "captions", "--manual_dir",
                         str(manual), "--cache", str(cache), "--num_shards", "2",
                         "--shard_index", str(rest), "--workers", "1"])
    assert (f"video_text/captions shard {rest}/2: {other['clips']} clips, {again['already_cached']} "
            f"already cached, 0 decoded, {other['missing']} missing") in capsys.readouterr().out
    # The build now only reads the cache: it still works after the good videos are deleted.
    for p in manual.glob("v[0-9].*"):
      p.unlink()
  with testing.environ(**{**env, "VLX_FRAME_CACHE": str(cache)}):
    cached = _examples(tmp_path / "from_cache", manual)
    report = bb.last_report("video_text", "train")
  assert cached == direct
  assert (report["found"], report["missing"], report["corrupt"], report["cached"]) == (4, 1, 1, 4)


def test_cache_entries_are_checked(tmp_path):
  video = tmp_path / "v.mp4"
  testing.write_video(video, num_frames=4, fps=4)
  entry = frame_cache.entry_path(frame_cache.settings_dir(str(tmp_path / "c"), 2, 0, 0),
                                 str(video), None, None)
  frame_cache.store(entry, str(video), jpegs=[b"ab", b"cde"], meta=dict(duration=1.0))
  assert frame_cache.load(entry, str(video)) == ([b"ab", b"cde"], dict(duration=1.0), None)
  assert frame_cache.is_fresh(entry, str(video))
  data = pathlib.Path(entry).read_bytes()
  pathlib.Path(entry).write_bytes(data[:-1])  # truncated: ignored, not trusted
  assert frame_cache.load(entry, str(video)) is None
  frame_cache.store(entry, str(video), jpegs=[b"ab"], meta={})
  testing.write_video(video, num_frames=8, fps=4)  # the video changed: the entry is stale
  assert frame_cache.load(entry, str(video)) is None and not frame_cache.is_fresh(entry, str(video))
  with pytest.raises(ValueError, match="shard_index 3 must be in"):
    extract_frames.extract("video_text", cache=str(tmp_path), num_shards=2, shard_index=3)
