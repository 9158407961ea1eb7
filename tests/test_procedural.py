"""Procedural image source: determinism, range, variety, pools and the writer."""
import numpy as np
import pytest

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.data import procedural
from ptychonet_tf.utils.errors import UserError


def _stats(image):
  """(standard deviation, mean squared forward difference) of an image."""
  gy = np.diff(image, axis=0)[:, :-1]
  gx = np.diff(image, axis=1)[:-1, :]
  return float(image.std()), float(np.mean(gy**2 + gx**2))


def test_deterministic_and_distinct():
  a = procedural.procedural_image(3, "train", size=64, seed=1)
  assert a.tobytes() == procedural.procedural_image(3, "train", size=64,
                                                    seed=1).tobytes()
  for other in (procedural.procedural_image(4, "train", size=64, seed=1),
                procedural.procedural_image(3, "test", size=64, seed=1),
                procedural.procedural_image(3, "train", size=64, seed=2)):
    assert not np.array_equal(a, other)


@pytest.mark.parametrize("family", procedural.FAMILIES)
def test_range_dtype_shape(family):
  for i in range(4):
    image = procedural.procedural_image(i, "test", size=48, family=family)
    assert image.shape == (48, 48) and image.dtype == np.float32
    assert np.isfinite(image).all()
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_variety_of_64_images():
  stats = np.array([_stats(procedural.procedural_image(i, "train", size=128))
                    for i in range(64)])
  std, grad = stats[:, 0], stats[:, 1]
  # Measured (size 128, seed 0): std 0.09-0.50, gradient energy spans > 3
  # decades (smooth fields ~1e-4 to gratings ~1).
  assert std.min() > 0.02 and std.max() - std.min() > 0.25
  assert grad.max() / grad.min() > 1e3
  assert np.mean(std > 0.05) > 0.9  # not near-constant
  # Several families and no two equal images.
  assert len({procedural.procedural_image(i, "train", size=16).tobytes()
              for i in range(64)}) == 64


def test_bad_arguments():
  with pytest.raises(UserError, match="split 'valid'"):
    procedural.procedural_image(0, "valid")
  with pytest.raises(UserError, match="at least 8"):
    procedural.procedural_image(0, "train", size=4)
  with pytest.raises(UserError, match="positive image count"):
    images_lib.open_image_pools("procedural:zero")
  with pytest.raises(UserError, match="positive image count"):
    images_lib.open_image_pools("procedural:0")
  with pytest.raises(UserError, match="empty part"):
    images_lib.open_image_pools("default++procedural")


def test_pools_disjoint_and_load():
  train, test = images_lib.open_image_pools("procedural")
  assert (len(train), len(test)) == (procedural.DEFAULT_NUM_TRAIN,
                                     procedural.DEFAULT_NUM_TEST)
  assert not {r.name for r in train} & {r.name for r in test}
  assert {r.kind for r in train + test} == {"procedural"}
  train, test = images_lib.open_image_pools("procedural:16")
  assert (len(train), len(test)) == (16, 2)
  image = images_lib.load_image(test[1])
  assert image.shape == (procedural.DEFAULT_SIZE,) * 2
  assert image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
  np.testing.assert_array_equal(image,
                                procedural.procedural_image(1, "test"))
  # Generated on demand, never cached.
  cache = images_lib.ImageCache()
  np.testing.assert_array_equal(cache(test[1]), image)
  assert not cache._images  # pylint: disable=protected-access


def test_dead_leaves_images():
  """Deterministic, in range, covered by disks of many sizes, a source of
  its own; the other families' images are as they were without it."""
  a = procedural.dead_leaves_image(3, "train", size=96, seed=1)
  assert a.tobytes() == procedural.dead_leaves_image(3, "train", size=96,
                                                     seed=1).tobytes()
  assert a.shape == (96, 96) and a.dtype == np.float32
  assert 0.0 <= a.min() and a.max() <= 1.0
  for other in (procedural.dead_leaves_image(4, "train", size=96, seed=1),
                procedural.dead_leaves_image(3, "test", size=96, seed=1)):
    assert not np.array_equal(a, other)
  # Its own random stream: the procedural image of the same index differs,
  # and stream 0 is the seed sequence of before streams existed.
  assert not np.array_equal(
      a, procedural.procedural_image(3, "train", size=96, seed=1))
  np.testing.assert_array_equal(
      procedural.image_rng(5, "test", 2).random(4),
      np.random.default_rng(np.random.SeedSequence([2, 1, 5])).random(4))
  # Scale invariance: the leaves' edges make the images' fine detail
  # (gradient energy) and coarse structure (variance of 8x8 block means)
  # both present in every image, unlike a smooth field or a grating.
  for i in range(6):
    image = procedural.dead_leaves_image(i, "train", size=128)
    blocks = image.reshape(16, 8, 16, 8).mean(axis=(1, 3))
    assert blocks.std() > 0.03, i
    assert np.mean(np.abs(np.diff(image, axis=1)) > 0.05) > 0.02, i
    # Mostly flat leaves: most neighbours are equal or nearly so.
    assert np.mean(np.abs(np.diff(image, axis=1)) < 0.01) > 0.3, i
  # Every pixel is covered by the disks or their nearest neighbour.
  rng = np.random.default_rng(0)
  assert np.isfinite(procedural.dead_leaves(rng, 64, coverage=0.5)).all()
  train, test = images_lib.open_image_pools("dead_leaves:16")
  assert (len(train), len(test)) == (16, 2)
  assert {r.kind for r in train + test} == {"procedural"}
  np.testing.assert_array_equal(images_lib.load_image(test[1]),
                                procedural.dead_leaves_image(1, "test"))
  assert not {r.name for r in train} & {
      r.name for r in images_lib.open_image_pools("procedural:16")[0]}
  with pytest.raises(UserError, match="dead_leaves:0 needs a positive"):
    images_lib.open_image_pools("dead_leaves:0")


def test_plus_concatenates_pools(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "photos"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(
        folder / f"im{i}.png")
  photos = images_lib.open_image_pools(str(folder))
  assert sum(map(len, photos)) == 3
  # A whole spec naming an existing path with '+' is never split.
  plus = tmp_path / "photos+more"
  folder.rename(plus)
  assert images_lib.open_image_pools(str(plus))[1][0].name.startswith(
      str(plus))
  plus.rename(folder)
  default = images_lib.open_image_pools("default")
  proc = images_lib.open_image_pools("procedural:8")
  mixed = images_lib.open_image_pools(f"default+procedural:8+{folder}")
  for k in (0, 1):
    assert mixed[k] == default[k] + proc[k] + photos[k]
  assert not {r.name for r in mixed[0]} & {r.name for r in mixed[1]}
  with pytest.raises(UserError, match="nowhere"):
    images_lib.open_image_pools("default+nowhere/*.png")


def test_writer_accepts_procedural(tmp_path):
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import geometry as geometry_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import simulator  # pylint: disable=g-import-not-at-top
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))
  config = writer.WriteConfig(simulation=sim, images="procedural:8",
                              num_train=4, num_test=2, num_shards=1)
  out = str(tmp_path / "data")
  writer.write_dataset(config, out, workers=1, progress=False)
  for split, n in (("train", 4), ("test", 2)):
    batches = list(pipeline.make_dataset(out, split, batch_size=8,
                                         shuffle=False).as_numpy_iterator())
    assert len(batches) == 1
    batch = batches[0]
    assert batch["amplitudes"].shape[:2] == (n, 10)
    assert np.isfinite(batch["amplitudes"]).all()
    assert batch["object_amplitude"].shape[0] == n
    assert batch["object_phase"].std() > 0
