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


def _write_tfds_images(data_dir, name, counts, with_image=True):
  """A prepared tfds dataset (no download): `name`'s TFRecords + tfds metadata.

  Writes data_dir/name/1.0.0/ with counts[split] examples per split of
  20x24 RGB uint8 images (and an int64 label), serialized and described by
  tensorflow-datasets' own API. Returns the dataset version directory.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = {"label": tfds.features.Tensor(shape=(), dtype=np.int64)}
  if with_image:
    spec["image"] = tfds.features.Image(shape=(20, 24, 3))
  features = tfds.features.FeaturesDict(spec)
  version_dir = data_dir / name / "1.0.0"
  version_dir.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for split, n in counts.items():
    path = version_dir / f"{name}-{split}.tfrecord-00000-of-00001"
    with tf.io.TFRecordWriter(str(path)) as writer:
      for i in range(n):
        example = {"label": i}
        if with_image:
          example["image"] = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
        writer.write(features.serialize_example(example))
  tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features,
                                     check_data=False)
  return version_dir


def test_tfds_directory_pools(tmp_path):
  version_dir = _write_tfds_images(tmp_path, "tiny_images",
                                   {"train": 6, "test": 2})
  train, test = images_lib.open_image_pools(f"tfds:{version_dir}")
  assert len(train) == 6 and len(test) == 2
  assert not {r.name for r in train} & {r.name for r in test}
  image = images_lib.load_image(test[1])
  assert image.shape == (20, 24) and image.dtype == np.float32
  # Only a train split: its first images are held out for testing.
  only_train = _write_tfds_images(tmp_path / "one", "one_split", {"train": 5})
  train, test = images_lib.open_image_pools(f"tfds:{only_train}", max_images=4)
  assert len(train) == 4 and len(test) == 1


@pytest.mark.slow
def test_tfds_name_pools_from_the_data_dir(tmp_path, monkeypatch):
  from tensorflow_datasets.core.utils import file_utils  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _write_tfds_images(tmp_path, "tiny_named_images", {"train": 3, "test": 2})
  # tfds.builder(NAME) looks in the registered data dirs; register this one
  # for this test only.
  monkeypatch.setattr(file_utils, "_REGISTERED_DATA_DIRS", set())
  tfds.core.add_data_dir(str(tmp_path))
  train, test = images_lib.open_image_pools("tfds:tiny_named_images")
  assert len(train) == 3 and len(test) == 2
  assert images_lib.load_image(train[0]).shape == (20, 24)


def test_tfds_unknown_dataset_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="tensorflow-datasets dataset"):
    images_lib.open_image_pools("tfds:no_such_dataset_xyz")
  with pytest.raises(UserError, match="does not exist"):
    images_lib.open_image_pools(f"tfds:{tmp_path / 'missing'}")
  with pytest.raises(UserError, match="holds no dataset_info.json"):
    images_lib.open_image_pools(f"tfds:{tmp_path}")
  no_images = _write_tfds_images(tmp_path, "labels_only", {"train": 2},
                                 with_image=False)
  with pytest.raises(UserError, match="has no image feature"):
    images_lib.open_image_pools(f"tfds:{no_images}")


def test_to_gray_variants():
  rgba = np.zeros((4, 5, 4), np.uint8)
  rgba[..., 0] = 255
  assert images_lib.to_gray(rgba).shape == (4, 5)
  assert images_lib.to_gray(np.ones((3, 3), bool)).max() == 1
  with pytest.raises(UserError):
    images_lib.to_gray(np.zeros((2, 2, 2, 2)))


def test_images_too_small_for_an_object_are_refused(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = tmp_path / "dot.png"
  Image.fromarray(np.full((1, 1), 9, np.uint8)).save(path)
  with pytest.raises(UserError, match="is 1x1 pixels; at least 8x8"):
    images_lib.read_image_file(str(path))
  ref = images_lib.ImageRef(name="tfds:x/3", kind="array",
                            array=np.zeros((4, 30), np.uint8))
  with pytest.raises(UserError, match="tfds:x/3 is 4x30 pixels"):
    images_lib.load_image(ref)
  assert images_lib.check_image_size(np.zeros((8, 8)), "ok").shape == (8, 8)
