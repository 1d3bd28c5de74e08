"""ALPRO PEM data: random_erase boxes, crop_video / mpm_mask batches, entity prompts (spec §5.4)."""
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs import alpro_pretrain, common
from data_builders.moving_shapes import captions as cap
from vlx.data import pipeline, tasks, text_ops, train_stream, video_ops
from vlx.models.alpro import prompts
from vlx.models.alpro import data as alpro_data

# raw 0 after normalisation, in float32 as the pipeline computes it: -mean/std
FILL = -np.asarray(video_ops.CLIP_MEAN, np.float32) / np.asarray(video_ops.CLIP_STD, np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"  # shared with test_data_pipeline
  pipeline.get_builder("moving_shapes", "tiny", str(path))
  return path


def _boxes(size, patch, n, salt=0):
  fn = tf.function(lambda s: alpro_data.erase_box(size, size, patch, s))
  return np.stack([fn(tf.constant([salt, i], tf.int64)).numpy() for i in range(n)])


@pytest.mark.parametrize("size,patch", [(224, 16), (64, 16), (32, 8), (32, 16)])
def test_erase_box_aligned_inside_and_area(size, patch):
  boxes = _boxes(size, patch, 300)
  top, left, h, w = boxes.T
  assert (boxes % patch == 0).all()
  assert (h >= patch).all() and (w >= patch).all()
  assert (top + h <= size).all() and (left + w <= size).all() and (boxes >= 0).all()
  # Before rounding w·h <= s <= 0.5·S²; rounding down removes less than a patch from w and h
  # (for these sizes that keeps more than 0.1·S² of the box).
  area = h * w
  assert (area <= 0.5 * size * size).all() and (area >= 0.1 * size * size).all()
  if size == 224:  # the box varies: many shapes and positions, both orientations
    assert len({tuple(b) for b in boxes}) > 100
    assert (h > w).any() and (w > h).any()
    assert 0.3 * size * size * 0.5 < np.median(area) < 0.5 * size * size


def test_erase_box_matches_reference_rejection_draw():
  """With the same candidate draws, the box is the reference loop's first accepted one."""
  seed = tf.constant([3, 7], tf.int64)
  size, patch, tries = 64, 16, alpro_data.ERASE_TRIES
  seeds = tf.random.experimental.stateless_split(seed, 4)
  s = tf.random.stateless_uniform([tries], seeds[0], 0.3, 0.5, tf.float64).numpy() * size * size
  r = tf.random.stateless_uniform([tries], seeds[1], 0.3, 1 / 0.3, tf.float64).numpy()
  left = tf.random.stateless_uniform([tries], seeds[2], 0, size, tf.int32).numpy()
  top = tf.random.stateless_uniform([tries], seeds[3], 0, size, tf.int32).numpy()
  for i in range(tries):  # the reference loop, written out
    w, h = int(np.sqrt(s[i] / r[i])), int(np.sqrt(s[i] * r[i]))
    w, h, lf, tp = w - w % patch, h - h % patch, left[i] - left[i] % patch, top[i] - top[i] % patch
    if lf + w <= size and tp + h <= size:
      break
  np.testing.assert_array_equal(alpro_data.erase_box(size, size, patch, seed).numpy(),
                                [tp, lf, h, w])


def test_erase_box_rejects_unaligned_frames():
  with pytest.raises(ValueError, match="patch_size"):
    alpro_data.erase_box(36, 32, 16, tf.constant([0, 0], tf.int64))


def test_pem_crop_by_hand():
  video = tf.random.stateless_normal([2, 8, 8, 3], [1, 2])
  crop, mask = alpro_data.pem_crop(video, tf.constant([2, 4, 4, 2]), 2)  # rows 2..5, cols 4..5
  crop, mask, video = crop.numpy(), mask.numpy(), video.numpy()
  inside = np.zeros((8, 8), bool)
  inside[2:6, 4:6] = True
  np.testing.assert_array_equal(crop[:, inside], video[:, inside])
  np.testing.assert_array_equal(crop[:, ~inside], np.broadcast_to(FILL, crop[:, ~inside].shape))
  np.testing.assert_array_equal(video_ops.normalize(tf.zeros([3])).numpy(), FILL)
  expected = np.ones((4, 4), np.float32)
  expected[1:3, 2] = 0
  np.testing.assert_array_equal(mask, expected)
  assert mask.dtype == np.float32


def _pem_config(data_dir, pem=True, **train):
  c = common.base_config()
  c.model = alpro_pretrain.alpro_model("tiny")
  c.model.pem = pem
  c.model.video.patch_size = 8
  c.data.update(data_dir=str(data_dir), global_batch_size=8, shuffle_buffer=64,
                tokenizer="moving_shapes")
  c.data.train.update(dict(dict(builder_config="tiny", num_frames=2, resolution=32,
                                max_text_len=16), **train))
  return c


def _take(ds, n):
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


def test_train_batches_have_consistent_crops(tiny_dir):
  c = _pem_config(tiny_dir)
  kw = dict(process_index=0, process_count=1)
  run = _take(train_stream._train_dataset(c, **kw), 3)
  b = run[0]
  assert sorted(b) == sorted(tasks.TRAIN_KEYS["retrieval"] + alpro_data.KEYS)
  assert b["crop_video"].shape == b["video"].shape == (8, 2, 32, 32, 3)
  assert b["mpm_mask"].shape == (8, 4, 4) and b["mpm_mask"].dtype == np.float32
  for i in range(8):
    pixels = np.kron(1 - b["mpm_mask"][i], np.ones((8, 8))).astype(bool)  # inside, per pixel
    assert 0 < pixels.sum() <= 0.5 * 32 * 32
    np.testing.assert_array_equal(b["crop_video"][i][:, pixels], b["video"][i][:, pixels])
    outside = b["crop_video"][i][:, ~pixels]
    np.testing.assert_array_equal(outside, np.broadcast_to(FILL, outside.shape))
    rows, cols = np.nonzero(pixels)  # a rectangle
    assert pixels.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
  assert len({m.tobytes() for bb in run for m in bb["mpm_mask"]}) > 4  # boxes differ per clip
  # Deterministic, resumable, and the clean batch is unchanged by model.pem.
  resumed = _take(train_stream._train_dataset(c, start_step=2, **kw), 1)[0]
  for k in run[2]:
    np.testing.assert_array_equal(resumed[k], run[2][k])
  plain = _take(train_stream._train_dataset(_pem_config(tiny_dir, pem=False), **kw), 1)[0]
  assert sorted(plain) == sorted(tasks.TRAIN_KEYS["retrieval"])
  for k in plain:
    np.testing.assert_array_equal(plain[k], b[k])


def test_pem_needs_a_patch_grid(tiny_dir):
  c = _pem_config(tiny_dir, resolution=36)
  with pytest.raises(ValueError, match="patch_size"):
    next(iter(train_stream._train_dataset(c, process_index=0, process_count=1)))


# -- entity prompts ------------------------------------------------------------------------------
def test_templates_are_the_reference_strings():
  assert len(prompts.VIDEO_TEMPLATES) == len(prompts.IMAGE_TEMPLATES) == 12
  assert prompts.VIDEO_TEMPLATES[0] == "A footage of a {}."
  assert prompts.VIDEO_TEMPLATES[9:] == ("A video footage of a {}.", "A video footage of the {}.",
                                         "A video footage of one {}.")
  assert prompts.IMAGE_TEMPLATES[6:9] == ("A good photo of the {}.", "A good photo of a {}.",
                                          "A good photo of one {}.")
  assert prompts.IMAGE_TEMPLATES[11] == "A good picture of one {}."
  for t in prompts.VIDEO_TEMPLATES + prompts.IMAGE_TEMPLATES:
    assert t.startswith("A ") and t.endswith(" {}.") and t.count("{}") == 1
  assert len(set(prompts.VIDEO_TEMPLATES + prompts.IMAGE_TEMPLATES)) == 24


def test_prompt_order_and_tokens(tmp_path):
  text_ops.write_vocab(["a", "the", "one", "of", "video", "footage", "portrait", "photo",
                        "picture", "good", ".", "cat", "dog"], tmp_path / "vocab.txt")
  tok = text_ops.load_tokenizer(str(tmp_path / "vocab.txt"))
  texts = prompts.build_prompts(["cat", "dog"], "video")
  assert len(texts) == 24 and texts[:3] == ["A footage of a cat.", "A footage of a dog.",
                                            "A footage of the cat."]
  assert texts[2 * 11 + 1] == "A video footage of one dog."
  ids, mask = prompts.build_prompt_batches(tok, ["cat", "dog"], "image")
  assert ids.shape == mask.shape == (24, 15) and ids.dtype == mask.dtype == np.int32
  v = tok.convert_tokens_to_ids
  row = [2] + v(["a", "good", "picture", "of", "one", "dog", "."]) + [3] + [0] * 6  # t=11, e=1
  np.testing.assert_array_equal(ids[11 * 2 + 1], row)
  np.testing.assert_array_equal(mask[11 * 2 + 1], [1] * 9 + [0] * 6)
  with pytest.raises(ValueError, match="kind"):
    prompts.build_prompts(["cat"], "audio")


def test_entity_file_round_trip_and_errors(tmp_path):
  path = tmp_path / "unigrams.txt"
  prompts.write_entities([("man", 120), ("woman", 90), ("dog", 7)], path)
  assert path.read_text() == "man 120\nwoman 90\ndog 7\n"
  assert prompts.load_entities(path, 2) == ["man", "woman"]
  assert prompts.load_entities(path, 3) == ["man", "woman", "dog"]
  with pytest.raises(ValueError, match="num_entities"):
    prompts.load_entities(path, 4)
  (tmp_path / "bad.txt").write_text("man 1\n 2\n")
  with pytest.raises(ValueError, match="line 2"):
    prompts.load_entities(tmp_path / "bad.txt", 2)
  with pytest.raises(FileNotFoundError, match="config.data.entities"):
    prompts.load_entities(tmp_path / "missing.txt", 1)


def test_shipped_entities_and_vocab_cover_every_prompt():
  shipped = prompts.SHIPPED["moving_shapes"]
  assert shipped.read_text() == "".join(f"{e} {n}\n" for e, n in prompts.moving_shapes_entities())
  entities = prompts.load_entities(shipped, 16)
  assert entities[0] == "object"  # index 0 is the one the reference's pseudo-labels ignore
  assert sorted(entities[1:]) == sorted(list(cap.SHAPES) + list(cap.COLOURS))
  for preset in ("demo", "tiny"):
    assert alpro_pretrain.alpro_model(preset).num_entities == len(entities)
  tok = text_ops.load_tokenizer("moving_shapes")
  for kind in ("video", "image"):
    ids, _ = prompts.build_prompt_batches(tok, entities, kind)
    assert not (ids == tok.unk_token_id).any() and (ids[:, 0] == tok.cls_token_id).all()
    assert ((ids == tok.sep_token_id).sum(1) == 1).all()  # none truncated


def test_prompt_inputs_from_config():
  c = alpro_pretrain.get_config("tiny")
  out = prompts.prompt_inputs(c)
  assert sorted(out) == ["image_prompt_ids", "image_prompt_mask", "video_prompt_ids",
                         "video_prompt_mask"]
  e = c.model.num_entities
  for v in out.values():
    assert v.shape == (12 * e, 15) and v.dtype == np.int32
  tok = text_ops.load_tokenizer("moving_shapes")
  assert tok.decode(out["video_prompt_ids"][4 * e + 2], skip_special_tokens=True) == \
      "a video of the square."
  c.data.train.builder = "webvid"
  c.data.tokenizer = "moving_shapes"
  with pytest.raises(ValueError, match="config.data.entities"):
    prompts.prompt_inputs(c)
