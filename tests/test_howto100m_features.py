"""HowTo100M features for pre-training: the howto100m_features builder on a tiny synthetic release
(AVLnet's nested .npz layout, flat .npy names, feature_2d / feature_3d folders, a 3D <id>.npz,
missing and corrupt items) and the 'asr_clips' training task against a numpy re-implementation of
shared/reference/eao/spec.md section 4 (HowTo100M pre-training sampling)."""
import os
import pickle
import re

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from data_builders.howto100m_features import howto100m_features_dataset_builder as hb
from vlx.data import asr_clips, seeds, train_stream
from vlx.data.errors import DataConfigError

D = 8                 # builder config 'tiny'
B, K, L = 6, 3, 24    # rows per batch, clips per video, text length
WORDS = "add salt then stir the pot slowly until golden brown serve hot with fresh herbs".split()
CAPTIONS = {          # (start, end, text): gaps, short segments needing extension, none at all
    "v0": [(1.0, 3.5, "add salt"), (4.0, 9.0, "then stir the pot"), (10.0, 12.0, "slowly"),
           (20.0, 29.0, "until golden brown")],
    "v1": [(t, t + 1.5, WORDS[i % len(WORDS)] + " " + WORDS[(i + 3) % len(WORDS)])
           for i, t in enumerate(np.arange(0.0, 24.0, 2.0))],
    "v2": [],
    "v3": [(0.0, 11.0, "serve hot with fresh herbs")],
    "bad_2d": [(0.0, 5.0, "salt")], "bad_3d": [(0.0, 5.0, "salt")],
    "no_audio": [(0.0, 5.0, "salt")],
}
SECONDS = dict(v0=30, v1=25, v2=20, v3=12, bad_2d=10, bad_3d=10, no_audio=10, no_caption=10)


def _arrays(vid):
  rng = np.random.default_rng(sum(map(ord, vid)))
  n = SECONDS[vid]
  return (rng.normal(size=(n, D)).astype(np.float32),
          rng.normal(size=(int(n * 1.5), D)).astype(np.float32),
          rng.normal(size=(40, n * 100)).astype(np.float16))


def _write_release(root):
  """Returns {video_id: (2d, 3d, mel [40, n])} of the usable videos."""
  arrays = {}
  for vid in SECONDS:
    f2, f3, mel = arrays[vid] = _arrays(vid)
    nested = os.path.join(root, "features", "cooking", "video_a", vid)
    if vid == "v2":     # flat .npy names
      flat = os.path.join(root, "flat")
      os.makedirs(flat, exist_ok=True)
      for suffix, x in (("_2d", f2), ("_3d", f3), ("_spec", mel)):
        np.save(os.path.join(flat, vid + suffix + ".npy"), x)
      continue
    if vid == "v3":     # the HowTo100M repository's feature_2d / feature_3d folders
      for folder, x in (("feature_2d", f2), ("feature_3d", f3)):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        np.save(os.path.join(root, folder, vid + ".npy"), x)
      os.makedirs(os.path.join(root, "audio"), exist_ok=True)
      np.savez(os.path.join(root, "audio", vid + "_spec.npz"), mel)
      continue
    os.makedirs(nested, exist_ok=True)
    np.savez(os.path.join(nested, vid + "_2d.npz"), features=f2)
    name3 = vid + ".npz" if vid == "v1" else vid + "_3d.npz"   # AVLnet's 3D fallback name
    np.savez(os.path.join(nested, name3), features=f3[:, :5] if vid == "bad_3d" else f3)
    if vid != "no_audio":
      np.savez(os.path.join(nested, vid + "_spec.npz"), mel)
    if vid == "bad_2d":
      with open(os.path.join(nested, vid + "_2d.npz"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")
  caps = {vid: {"start": np.asarray([s for s, _, _ in segs], np.float64),
                "end": np.asarray([e for _, e, _ in segs], np.float64),
                "text": np.asarray([t for _, _, t in segs], object)}
          for vid, segs in CAPTIONS.items()}
  with open(os.path.join(root, "caption.pickle"), "wb") as f:
    pickle.dump(caps, f, protocol=4)
  listed = [f"cooking/video_a/{v}" for v in SECONDS] + ["cooking/video_a/gone"]
  with open(os.path.join(root, "HowTo100M_1166_videopaths.txt"), "w") as f:
    f.write("path\n" + "\n".join(listed) + "\n")
  with open(os.path.join(root, "vocab.txt"), "w") as f:
    f.write("\n".join(WORDS) + "\n")
  return {v: arrays[v] for v in ("v0", "v1", "v2", "v3")}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = tmp_path_factory.mktemp("howto_release")
  data_dir = tmp_path_factory.mktemp("howto_data")
  arrays = _write_release(str(root))
  builder = hb.Builder(config="tiny", data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return root, data_dir, arrays, builder


def test_build_reads_every_layout_and_counts_the_rest(release):
  _, _, arrays, builder = release
  got = {ex["video_id"].decode(): ex for ex in builder.as_dataset(split="train").as_numpy_iterator()}
  assert sorted(got) == ["v0", "v1", "v2", "v3"]
  for vid, (f2, f3, mel) in arrays.items():
    ex = got[vid]
    np.testing.assert_array_equal(ex["features_2d"], f2)
    np.testing.assert_array_equal(ex["features_3d"], f3)
    np.testing.assert_array_equal(ex["audio"], mel.T.astype(np.float32))   # time first
    assert ex["duration"] == pytest.approx(SECONDS[vid])
    segs = CAPTIONS[vid]
    np.testing.assert_allclose(ex["asr"]["start"], [s for s, _, _ in segs])
    np.testing.assert_allclose(ex["asr"]["end"], [e for _, e, _ in segs])
    assert [t.decode() for t in ex["asr"]["text"]] == [t for _, _, t in segs]
  assert got["v0"]["path"] == b"cooking/video_a/v0"
  report = hb.bb.last_report("howto100m_features", "train")
  assert (report["annotated"], report["found"], report["missing"], report["corrupt"]) == (9, 4, 3, 2)
  assert sorted(report["corrupt_videos"]) == ["bad_2d", "bad_3d"]


def test_caption_pickle_with_code_is_refused(tmp_path):
  path = tmp_path / "caption.pickle"
  path.write_bytes(pickle.dumps({"v": os.system}))   # names posix.system: must not be loaded
  with pytest.raises(hb.bb.AnnotationError, match="refused to unpickle"):
    hb.read_captions(str(path))


# ----------------------------------------------------------------------------- the reference

def _t2f(t):  # librosa.time_to_frames(t, sr=16000, hop_length=160, n_fft=400)
  return (int(t * 16000) - 200) // 160


def reference_clip(u, n_mel, cap, min_time=8.0, n_frames=768):
  """Spec section 4 for one uniform u: (start, end, words, audio frames [lo, hi)), misaligned."""
  seconds = int((n_mel * 160 + 200) / 16000)          # int(frames_to_time(n_mel))
  start = u * max(0, seconds - min_time)
  end = start + min_time
  st, en, tx = cap["start"], cap["end"], cap["text"]
  ind = None
  if len(st):
    i_s = max(0, np.searchsorted(st, start, side="left") - 1)
    i_e = max(0, np.searchsorted(st, end, side="left") - 1)
    if st[i_s] <= start <= en[i_s]:
      ind = i_s
    elif st[i_e] <= end <= en[i_e]:
      ind = i_e
  if ind is None:
    lo = max(0, _t2f(start))
    return start, end, [], (lo, lo + n_frames)
  s = e = ind
  words = re.findall(r"[\w']+", tx[ind])
  while en[e] - st[s] < min_time:
    if s > 0 and e < len(en) - 1:
      if en[e] - st[s - 1] <= en[e + 1] - st[s]:
        s -= 1
        words.extend(re.findall(r"[\w']+", tx[s]))
      else:
        e += 1
        words.extend(re.findall(r"[\w']+", tx[e]))
    elif s > 0:
      s -= 1
      words.extend(re.findall(r"[\w']+", tx[s]))
    elif e < len(en) - 1:
      e += 1
      words.extend(re.findall(r"[\w']+", tx[e]))
    else:
      break
  start, end = st[s], en[e]
  lo, hi = _t2f(start + 0.5 * min_time), _t2f(start + 0.5 * min_time + min_time)
  lo = max(0, lo)
  return start, end, words, (lo, min(hi, lo + n_frames))


def _config(data_dir, root, **clips):
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), global_batch_size=B, shuffle_buffer=16,
                tokenizer=f"words:{os.path.join(root, 'vocab.txt')}")
  cd = ml_collections.ConfigDict
  c.data.train.update(dict(
      builder="howto100m_features", builder_config="tiny", task="asr_clips", max_text_len=L,
      clips=cd({"n_clips": K, **clips}),
      inputs=cd(dict(v2d=cd(dict(reader="features", feature="features_2d", dim=D, max_len=64)),
                     v3d=cd(dict(reader="features", feature="features_3d", dim=D, max_len=64)),
                     mel=cd(dict(reader="features", feature="audio", dim=40, max_len=800))))))
  return c


def _take(config, n, start_step=0):
  ds = train_stream._train_dataset(config, process_index=0, process_count=1,
                                   start_step=start_step, extra_keys=("video_id",), hooks=())
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


def _uniforms(seed, step, group):
  """The clip draws of the video whose first row is global row step * B + group * K."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  s = seeds.example_seed(seed, tf.constant(step * B + group * K, tf.int64), "clips")
  return tf.random.stateless_uniform([K], s, dtype=tf.float64).numpy()


def test_clips_match_the_reference_sampling_and_resume(release):
  root, data_dir, arrays, _ = release
  c = _config(data_dir, root)
  run = _take(c, 3)
  vocab = {w: i + 1 for i, w in enumerate(WORDS)}
  caps = {v: {"start": np.asarray([s for s, _, _ in segs], np.float64),
              "end": np.asarray([e for _, e, _ in segs], np.float64),
              "text": [t for _, _, t in segs]} for v, segs in CAPTIONS.items()}
  empty = with_text = 0
  for step, batch in enumerate(run):
    vids = [v.decode() for v in batch["video_id"]]
    for g in range(B // K):
      rows = range(g * K, (g + 1) * K)
      assert len({vids[r] for r in rows}) == 1          # a video's clips are consecutive rows
      vid = vids[g * K]
      f2, f3, mel = arrays[vid]
      for i, u in zip(rows, _uniforms(int(c.seed), step, g)):
        start, end, words, (alo, ahi) = reference_clip(u, mel.shape[1], caps[vid])
        for key, x, fps in (("v2d", f2, 1.0), ("v3d", f3, 1.5)):
          want = x[int(start * fps):int(end * fps) + 1]
          n = int(batch[f"{key}_mask"][i].sum())
          np.testing.assert_array_equal(batch[key][i][:n], want, err_msg=f"{vid} {key} row {i}")
        n = int(batch["mel_mask"][i].sum())
        np.testing.assert_array_equal(batch["mel"][i][:n], mel.T[alo:ahi].astype(np.float32))
        ids = [vocab[w] for w in words if w in vocab][:L]
        np.testing.assert_array_equal(batch["text_ids"][i], ids + [0] * (L - len(ids)))
        np.testing.assert_array_equal(batch["text_mask"][i], [1] * len(ids) + [0] * (L - len(ids)))
        empty += not words
        with_text += bool(words)
  assert empty and with_text          # both kinds of clips occur
  resumed = _take(c, 1, start_step=2)[0]
  for k in run[2]:
    np.testing.assert_array_equal(resumed[k], run[2][k], err_msg=k)
  with pytest.raises(DataConfigError, match="n_clips=4"):
    _take(_config(data_dir, root, n_clips=4), 1)


def test_audio_window_offset_and_no_asr_text():
  s = asr_clips.ClipSettings()
  # u = 0: start 0 (no segment covers it), end 8 inside [2, 12]: the clip is that segment
  w = asr_clips.clip_windows([0.0], 30.0, [2.0], [12.0], ["a b"], s)
  assert (w["start"], w["end"], w["text"]) == ([2.0], [12.0], ["a b"])
  assert w["audio_lo"] == [_t2f(6.0)] and w["audio_hi"] == [_t2f(6.0) + 768]   # +4 s, 768 frames
  assert w["video_lo"] == [[2], [3]] and w["video_hi"] == [[13], [19]]
  aligned = asr_clips.clip_windows([0.0], 30.0, [2.0], [12.0], ["a b"],
                                   asr_clips.ClipSettings(audio_offset=0.0, audio_seconds=0.0))
  assert (aligned["audio_lo"], aligned["audio_hi"]) == ([_t2f(2.0)], [_t2f(2.0) + 768])
  # no segment near the start or the end: empty text, audio from the clip start (no offset)
  w = asr_clips.clip_windows([0.5], 30.0, [28.0], [29.0], ["late"], s)
  assert w["text"] == [""] and (w["start"], w["end"]) == ([11.0], [19.0])
  assert (w["audio_lo"], w["audio_hi"]) == ([_t2f(11.0)], [_t2f(11.0) + 768])
