"""Image sources for simulated objects, each split into disjoint train/test pools.

A source spec is one of:

- ``default``: the embedded default, grayscale versions of the photographs that
  ship inside scikit-image's wheel (`skimage.data`); no download needed.
- a folder (every .png/.jpg/.jpeg/.tif/.tiff/.bmp inside, recursively) or a glob
  pattern such as ``'photos/*.jpg'``.
- ``tfds:NAME``: the image feature of a tensorflow-datasets dataset already
  prepared in the local TFDS data directory (this package never downloads).
- ``tfds:/path/to/dir``: the same for a prepared tfds dataset directory (the
  folder holding its dataset_info.json, e.g.
  ``~/tensorflow_datasets/mnist/3.0.1``), read with
  `tfds.builder_from_directory`.
- ``procedural`` or ``procedural:N``: deterministic synthetic images (smooth
  fields, shapes, edges, textures and mixtures; see `data.procedural`), N for
  training (default 512) and max(1, N // 8) others for testing (default 64),
  generated on demand.
- ``dead_leaves`` or ``dead_leaves:N``: deterministic images of the dead
  leaves model (`data.procedural.dead_leaves`: occluding disks of
  scale-invariant sizes, the procedural images closest to photographs in
  their statistics), counted as ``procedural``.
- ``A+B[+...]``: the pools of several specs above concatenated, e.g.
  ``default+procedural:64`` or ``photos+procedural`` to mix photographs with
  procedural images (a spec naming an existing path is never split at ``+``).

Train and test objects always come from disjoint source images. A pool is a
list of `ImageRef`; `load_image` turns one into a float32 [h, w] array in [0, 1].
"""
import dataclasses
import glob
import json
import os
import warnings
from typing import Optional

import numpy as np

from ptychonet_tf.data import procedural
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError

# Images of skimage.data that are stored inside the installed wheel. The test
# pool is fixed so that test objects are never built from training images.
DEFAULT_TRAIN = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass",
                 "gravel", "hubble_deep_field", "immunohistochemistry",
                 "retina", "cell", "clock", "page", "text", "logo")
DEFAULT_TEST = ("camera", "moon", "coins")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLIT_SEED = 20190909  # fixed: the train/test split of a folder never changes


@dataclasses.dataclass(frozen=True)
class ImageRef:
  """One source image: a skimage.data name, a file path, an in-memory array,
  or a procedural image named "procedural:{split}:{index}" (or
  "dead_leaves:{split}:{index}")."""
  name: str
  kind: str  # "skimage" | "file" | "array" | "procedural"
  array: Optional[np.ndarray] = dataclasses.field(default=None, compare=False)


def to_gray(image):
  """Any image array (gray, RGB, RGBA, bool, int) -> float32 [h, w] in [0, 1]."""
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.float32)
  elif np.issubdtype(image.dtype, np.integer):
    image = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
  image = image.astype(np.float32)
  if image.ndim == 3:
    if image.shape[-1] == 4:
      image = image[..., :3]
    if image.shape[-1] == 3:
      image = image @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    elif image.shape[-1] == 1:
      image = image[..., 0]
  if image.ndim != 2:
    raise UserError(f"image has shape {image.shape}; expected a 2-D grayscale "
                    f"or an RGB(A) image")
  lo, hi = float(image.min()), float(image.max())
  if hi > 1.0 or lo < 0.0:
    image = (image - lo) / max(hi - lo, 1e-12)
  return image


# Smaller images would be blown up into a (nearly) constant object.
MIN_IMAGE_SIZE = 8


def check_image_size(image, name):
  """Raises UserError if `image` [h, w] is smaller than MIN_IMAGE_SIZE a side."""
  if min(image.shape) < MIN_IMAGE_SIZE:
    raise UserError(f"image {name} is {image.shape[0]}x{image.shape[1]} "
                    f"pixels; at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} are "
                    f"needed to make an object (it would become a constant)")
  return image


def read_image_file(path):
  """Reads an image file as float32 grayscale [h, w] in [0, 1]."""
  if not os.path.isfile(path):
    raise UserError(f"image file {path} does not exist")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  # The size is checked here, from the header and against a lower limit
  # than PIL's (limits.MAX_IMAGE_PIXELS), before a pixel is decoded; PIL's
  # own check is off meanwhile so that it does not refuse first with its
  # decompression-bomb error.
  pil_limit = Image.MAX_IMAGE_PIXELS
  try:
    Image.MAX_IMAGE_PIXELS = None
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        limits.check_image_pixels(im.height, im.width, f"image file {path}")
        image = to_gray(np.asarray(im))
  except Image.DecompressionBombError as e:
    raise UserError(f"image file {path} is too large to read ({e})") from None
  except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
    raise UserError(f"image file {path} cannot be read as an image ({e})")
  finally:
    Image.MAX_IMAGE_PIXELS = pil_limit
  return check_image_size(image, path)


def load_image(ref):
  """float32 [h, w] in [0, 1] for an ImageRef (at least MIN_IMAGE_SIZE a side)."""
  if ref.kind == "array":
    return check_image_size(to_gray(ref.array), ref.name)
  if ref.kind == "file":
    return read_image_file(ref.name)
  if ref.kind == "skimage":
    from skimage import data  # pylint: disable=g-import-not-at-top
    return to_gray(getattr(data, ref.name)())
  if ref.kind == "procedural":
    source, split, index = ref.name.split(":")
    return procedural.SOURCES[source](int(index), split)
  raise ValueError(f"unknown image kind {ref.kind}")


class ImageCache:
  """`load_image` that reads each ImageRef once: callable(ref) -> image.

  Procedural images are not kept: they are cheap to regenerate (about 15 ms
  for 256x256) and a pool of 512 would hold 128 MiB in every worker.
  """

  def __init__(self):
    self._images = {}

  def __call__(self, ref):
    if ref.kind == "procedural":
      return load_image(ref)
    if ref not in self._images:
      self._images[ref] = load_image(ref)
    return self._images[ref]


def _list_files(spec):
  if os.path.isdir(spec):
    paths = [os.path.join(root, f)
             for root, _, files in os.walk(spec) for f in files
             if f.lower().endswith(IMAGE_EXTENSIONS)]
  else:
    paths = [p for p in glob.glob(spec, recursive=True)
             if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)]
  return sorted(paths)


def _is_tfds_path(name):
  """tfds:NAME names a directory when it is one or looks like a path."""
  return (os.path.isdir(os.path.expanduser(name)) or
          name.startswith(("/", "./", "../", "~")) or name in (".", ".."))


def check_tfds_templates(path):
  """Raises UserError unless every split's `filepathTemplate` in
  path/dataset_info.json names files inside `path` (`files.dataset_file`):
  tfds would follow `../elsewhere/...` or an absolute template."""
  info_path = os.path.join(path, "dataset_info.json")
  try:
    with open(info_path, encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{info_path} is not readable JSON ({e})") from None
  splits = info.get("splits", []) if isinstance(info, dict) else []
  for split in splits if isinstance(splits, list) else []:
    template = split.get("filepathTemplate") if isinstance(split, dict) else None
    if template is not None:
      files.dataset_file(path, template, f"{info_path} (split "
                         f"{split.get('name')!r}, filepathTemplate)")


def _tfds_builder(tfds, name):
  """A tfds builder for a dataset NAME or a prepared dataset directory."""
  if _is_tfds_path(name):
    path = os.path.expanduser(name)
    if not os.path.isdir(path):
      raise UserError(f"tensorflow-datasets dataset directory {name} does not "
                      f"exist")
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
      raise UserError(f"tensorflow-datasets dataset directory {name} holds no "
                      f"dataset_info.json; expected a prepared dataset version "
                      f"folder such as ~/tensorflow_datasets/mnist/3.0.1")
    check_tfds_templates(path)
    return tfds.builder_from_directory(path)
  builder = tfds.builder(name)
  if not list(builder.info.splits.keys()):
    raise UserError(f"tensorflow-datasets dataset {name!r} is not prepared in "
                    f"{builder.data_dir}; run its download_and_prepare first")
  return builder


def _tfds_pools(name, max_images):
  """(train, test) ImageRef pools from a tfds dataset name or directory.

  Args:
    name: a dataset prepared in the local TFDS data directory ("mnist",
      "cifar10:3.0.2") or the path of a prepared dataset directory (the
      folder holding dataset_info.json), read with
      `tfds.builder_from_directory`.
    max_images: cap on images read from each split.

  Returns:
    (train_pool, test_pool): lists of ImageRef of kind "array" (uint8 or
    float images as the dataset stores them, [h, w] or [h, w, c]), from the
    train split and the test (or validation) split; with a single split, its
    first max(1, max_images // 10) images are held out for testing.

  Raises:
    UserError: tensorflow-datasets is missing, or the dataset cannot be
      opened, is not prepared, or has no image feature.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("image source tfds:NAME needs tensorflow-datasets "
                    "(pip install 'ptychonet_tf[tfds]')")
  try:
    builder = _tfds_builder(tfds, name)
    splits = list(builder.info.splits.keys())
  except UserError:
    raise
  except Exception as e:  # tfds raises many types for unknown/unprepared data
    raise UserError(f"tensorflow-datasets dataset {name!r} cannot be opened "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
  if not splits:
    raise UserError(f"tensorflow-datasets dataset {name!r} has no splits")
  image_key = next((k for k, v in builder.info.features.items()
                    if type(v).__name__ == "Image"), None)
  if image_key is None:
    raise UserError(f"tensorflow-datasets dataset {name!r} has no image feature")
  test_split = next((s for s in ("test", "validation") if s in splits), None)

  def take(split, start=0, stop=None):
    ds = builder.as_dataset(split=split)
    images = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
      if i < start:
        continue
      if (stop is not None and i >= stop) or len(images) >= max_images:
        break
      images.append(ImageRef(f"{name}/{split}/{i}", "array", ex[image_key]))
    return images

  train_split = "train" if "train" in splits else splits[0]
  if test_split is not None:
    return take(train_split), take(test_split)
  # Only one split: hold out its first images for testing.
  n_test = max(1, max_images // 10)
  return take(train_split, start=n_test), take(train_split, stop=n_test)


def _procedural_pools(count, source="procedural"):
  """(train, test) pools of procedural ImageRefs for "procedural[:N]" or
  "dead_leaves[:N]" (`source`)."""
  num_train, num_test = procedural.parse_count(count, source)
  return ([ImageRef(f"{source}:train:{i}", "procedural")
           for i in range(num_train)],
          [ImageRef(f"{source}:test:{i}", "procedural")
           for i in range(num_test)])


def _is_combined(spec):
  """Whether spec is an "A+B" list rather than one path or glob with a '+'."""
  return ("+" in spec and not os.path.exists(os.path.expanduser(spec)) and
          not glob.glob(spec, recursive=True))


def open_image_pools(spec="default", test_fraction=0.1, max_images=1000):
  """Returns (train_pool, test_pool): disjoint lists of ImageRef.

  Args:
    spec: "default", a folder, a glob pattern, "tfds:NAME",
      "tfds:/path/to/prepared/dataset_dir", "procedural" or "procedural:N",
      "dead_leaves" or "dead_leaves:N",
      or several of these joined by "+" (their pools concatenated in order).
    test_fraction: share of a folder's images held out for testing (at least
      one image each side).
    max_images: cap on images read from a tensorflow-datasets split.

  Raises:
    UserError: the folder/glob matches fewer than 2 images, the TFDS
      dataset cannot be opened, a procedural count is not a positive integer,
      or a "+" list has an empty part.
  """
  if spec and _is_combined(spec):
    train, test = [], []
    for part in spec.split("+"):
      if not part.strip():
        raise UserError(f"image source {spec!r} has an empty part; expected "
                        f"specs joined by '+', e.g. default+procedural")
      part_train, part_test = open_image_pools(part.strip(), test_fraction,
                                               max_images)
      train += part_train
      test += part_test
    return train, test
  if spec in ("default", "", None):
    return ([ImageRef(n, "skimage") for n in DEFAULT_TRAIN],
            [ImageRef(n, "skimage") for n in DEFAULT_TEST])
  if spec.startswith("tfds:"):
    return _tfds_pools(spec[len("tfds:"):], max_images)
  for source in procedural.SOURCES:
    if spec == source or spec.startswith(source + ":"):
      return _procedural_pools(spec[len(source) + 1:], source)
  paths = _list_files(spec)
  if len(paths) < 2:
    what = "folder" if os.path.isdir(spec) else "pattern"
    raise UserError(f"image {what} {spec} holds {len(paths)} image files "
                    f"({', '.join(IMAGE_EXTENSIONS)}); need at least 2 so that "
                    f"train and test images differ")
  order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
  n_test = int(np.clip(round(test_fraction * len(paths)), 1, len(paths) - 1))
  test = sorted(paths[i] for i in order[:n_test])
  train = sorted(paths[i] for i in order[n_test:])
  return ([ImageRef(p, "file") for p in train],
          [ImageRef(p, "file") for p in test])
