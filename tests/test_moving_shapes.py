"""moving_shapes builder: splits, features, determinism, and captions that describe the pixels."""
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders.moving_shapes import captions as cap
from data_builders.moving_shapes import moving_shapes_dataset_builder as msb
from data_builders.moving_shapes import render


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> pathlib.Path:
  """The `tiny` config, built once per session (shared with test_data_pipeline by path)."""
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"
  msb.Builder(config="tiny", data_dir=str(path)).download_and_prepare()
  return path


@pytest.fixture(scope="module")
def test_examples(tiny_dir):
  builder = msb.Builder(config="tiny", data_dir=str(tiny_dir))
  return list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))


def test_splits_and_features(tiny_dir, test_examples):
  builder = msb.Builder(config="tiny", data_dir=str(tiny_dir))
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == dict(
      train=64, val=16, test=16)
  ex = test_examples[0]
  assert ex["video"].shape == (8, 32, 32, 3) and ex["video"].dtype == np.uint8
  assert ex["audio"].shape == (8000,) and ex["audio"].dtype == np.float32
  assert len(ex["captions"]) == 5 and len(ex["mc_choices"]) == 5
  assert [q.decode() for q in ex["qa"]["qtype"]] == ["colour", "shape", "direction", "count"]
  ids = {e["video_id"].decode() for e in test_examples}
  assert len(ids) == 16 and all(i.startswith("test_") for i in ids)
  for e in test_examples:
    a = cap.Attributes(*(e[k].decode() for k in ("shape", "colour", "size", "direction", "speed")),
                       int(e["num_objects"]), e["background"].decode())
    assert e["captions"][0].decode() == cap.canonical_caption(a)
    assert e["mc_choices"][e["mc_answer"]] == e["captions"][0]
    assert len(set(e["mc_choices"])) == 5
    assert cap.DIRECTIONS[e["label"]] == e["label_name"].decode() == a.direction
    for text in e["captions"]:  # colour and shape are always named
      assert a.colour in text.decode() and cap._noun(a) in text.decode()
    answers = [x.decode() for x in e["qa"]["answer"]]
    assert answers == [a.colour, a.shape, a.direction.replace("_", " "),
                       cap.COUNT_WORDS[a.num_objects]]


def test_two_builds_are_identical(tiny_dir, tmp_path):
  msb.Builder(config="tiny", data_dir=str(tmp_path)).download_and_prepare()
  first = sorted((tiny_dir / "moving_shapes/tiny/1.0.0").glob("*.tfrecord*"))
  second = sorted((tmp_path / "moving_shapes/tiny/1.0.0").glob("*.tfrecord*"))
  assert [p.name for p in first] == [p.name for p in second] and len(first) == 3
  for a, b in zip(first, second):
    assert a.read_bytes() == b.read_bytes(), a.name


def _object_pixels(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per pixel: index of the nearest palette colour and whether it is close enough to count."""
  palette = np.array(list(cap.COLOURS.values()), np.float32)
  dist = np.linalg.norm(video[..., None, :].astype(np.float32) - palette, axis=-1)
  return dist.argmin(-1), dist.min(-1) < 60


def test_pixels_show_the_captioned_colour_and_motion(test_examples):
  for e in test_examples:
    nearest, close = _object_pixels(e["video"])
    counts = np.bincount(nearest[close], minlength=len(cap.COLOURS))
    assert list(cap.COLOURS)[counts.argmax()] == e["colour"].decode(), e["captions"][0]
    assert counts.max() > 0.9 * close.sum()
    # The centre of the object pixels moves along the captioned direction.
    ys, xs = np.mgrid[:32, :32]
    centres = np.array([[xs[m].mean(), ys[m].mean()] for m in close])
    shift = centres[-1] - centres[0]
    velocity = np.array(render.VELOCITY[e["direction"].decode()])
    travel = render.TRAVEL_FRACTION[e["speed"].decode()] * 32
    np.testing.assert_allclose(shift, velocity * travel, atol=2.0, err_msg=e["captions"][0])


def test_shapes_are_distinct_masks():
  grid = np.linspace(-1.2, 1.2, 241)
  u, v = np.meshgrid(grid, grid)
  fill = {s: render.shape_mask(s, u, v).mean() * 2.4 ** 2 / 4 for s in cap.SHAPES}
  assert fill["circle"] == pytest.approx(np.pi / 4, abs=0.01)
  assert fill["diamond"] == pytest.approx(0.5, abs=0.01)
  assert fill["square"] == pytest.approx(0.85 ** 2, abs=0.01)
  masks = {s: render.shape_mask(s, u, v) for s in cap.SHAPES}
  for i, a in enumerate(cap.SHAPES):
    for b in cap.SHAPES[i + 1:]:
      assert (masks[a] != masks[b]).mean() > 0.05, (a, b)


def test_attribute_space_and_vocabulary():
  default = msb.Builder.BUILDER_CONFIGS[0]
  assert default.name == "default"
  assert cap.num_combinations() >= 10 * default.num_test
  assert len(cap.vocabulary()) + 5 <= 128


def test_examples_depend_only_on_split_and_index():
  config = msb.Builder.BUILDER_CONFIGS[1]
  a, b = msb.make_example("val", 3, config), msb.make_example("val", 3, config)
  assert a["video"] == b["video"] and a["captions"] == b["captions"]
  np.testing.assert_array_equal(a["audio"], b["audio"])
  assert msb.make_example("test", 3, config)["video"] != a["video"]
  # The tone's pitch is the colour's.
  spectrum = np.abs(np.fft.rfft(a["audio"]))
  peak = np.fft.rfftfreq(len(a["audio"]), 1 / config.sample_rate)[spectrum.argmax()]
  assert peak == pytest.approx(render.PITCH[a["colour"]], abs=2.0)


def test_colour_config_labels_the_colour(tmp_path):
  """The `colour` config: the same clips, `label` = the shapes' colour (VIMPAC's demo label)."""
  builder = msb.Builder(config="colour", data_dir=str(tmp_path))
  assert builder.info.features["label"].names == list(cap.COLOURS)
  small = dict(num_frames=4, resolution=32, fps=4)
  by_colour = msb.MovingShapesConfig(name="c", label_attribute="colour", **small)
  by_direction = msb.MovingShapesConfig(name="d", **small)
  for index in range(6):
    e, d = msb.make_example("train", index, by_colour), msb.make_example("train", index, by_direction)
    assert e["label"] == e["label_name"] == e["colour"] and d["label"] == d["direction"]
    assert e["video"] == d["video"] and e["captions"] == d["captions"]
