import numpy as np
import pytest
from PIL import Image

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.utils.errors import UserError


def test_default_pools_are_disjoint_and_load():
  train, test = images_lib.open_image_pools("default")
  assert len(train) >= 10 and len(test) >= 2
  assert not {r.name for r in train} & {r.name for r in test}
  for ref in (train[0], test[0]):
    image = images_lib.load_image(ref)
    assert image.ndim == 2 and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1


def _write_images(folder, n):
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(n):
    Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")


def test_folder_and_glob_pools(tmp_path):
  _write_images(tmp_path / "imgs", 10)
  (tmp_path / "imgs" / "notes.txt").write_text("not an image")
  train, test = images_lib.open_image_pools(str(tmp_path / "imgs"), test_fraction=0.2)
  assert len(train) == 8 and len(test) == 2
  assert not {r.name for r in train} & {r.name for r in test}
  # Same split every time (it never depends on the data seed).
  assert images_lib.open_image_pools(str(tmp_path / "imgs"), test_fraction=0.2)[1] == test
  train_g, test_g = images_lib.open_image_pools(str(tmp_path / "imgs" / "*.png"))
  assert len(train_g) + len(test_g) == 10
  assert images_lib.load_image(test[0]).shape == (20, 24)


def test_bad_image_sources(tmp_path):
  with pytest.raises(UserError, match="holds 0 image files"):
    images_lib.open_image_pools(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    images_lib.read_image_file(str(tmp_path / "missing.png"))
  (tmp_path / "bad.png").write_bytes(b"garbage")
  with pytest.raises(UserError, match="cannot be read"):
    images_lib.read_image_file(str(tmp_path / "bad.png"))


def test_tfds_unknown_dataset_is_a_user_error():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match="tensorflow-datasets dataset"):
    images_lib.open_image_pools("tfds:no_such_dataset_xyz")


def test_to_gray_variants():
  rgba = np.zeros((4, 5, 4), np.uint8)
  rgba[..., 0] = 255
  assert images_lib.to_gray(rgba).shape == (4, 5)
  assert images_lib.to_gray(np.ones((3, 3), bool)).max() == 1
  with pytest.raises(UserError):
    images_lib.to_gray(np.zeros((2, 2, 2, 2)))
