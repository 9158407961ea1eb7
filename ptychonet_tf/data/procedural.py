"""Procedural training images: deterministic synthetic images for a seed.

Each image is drawn by one of a few families, chosen at random per image:

- ``smooth``: Gaussian-filtered white noise at one or two random scales,
  sometimes passed through a soft threshold (blobs);
- ``shapes``: a background with disks, ellipses, rectangles and convex
  polygons, with hard or soft (sigmoid) edges, painted over each other;
- ``edges``: piecewise-constant regions cut by random straight lines, or a
  staircase of steps along a random direction;
- ``texture``: a sum of random sinusoids, or a square-wave grating, stripes or
  checkerboard at a random orientation and period;
- ``mixture``: two images of the families above blended by a sum, a product
  or a third image (or a shape mask) used as the mask.

Apart from these, `dead_leaves_image` draws the dead leaves model (Matheron;
Lee, Mumford and Huang 2001): opaque disks of power-law radii fallen on each
other until they cover the image. Its occlusions give it the scale invariance
and the edge statistics of photographs, which the families above lack; it is
its own image source (``dead_leaves[:N]`` in `data.images`), with its own
random streams, so adding it changed no image of the families above.

Every image is min-max normalised to [0, 1] and given a random gamma. An image
depends only on (index, split, size, seed): its numpy Generator is seeded from
(seed, split id, index), so train and test images never coincide and any one
image can be regenerated on demand. Pure numpy/scipy (no TensorFlow).
"""
import numpy as np
from scipy import ndimage
from scipy import special

from ptychonet_tf.utils.errors import UserError

SPLITS = {"train": 0, "test": 1}
# The random stream of each generator (`image_rng`): the families above draw
# from stream 0, dead leaves from stream 1.
STREAMS = {"procedural": 0, "dead_leaves": 1}
FAMILIES = ("smooth", "shapes", "edges", "texture", "mixture")
# Probability of each family (the mixture recurses into the first four).
FAMILY_WEIGHTS = (0.2, 0.25, 0.15, 0.2, 0.2)
DEFAULT_SIZE = 256
DEFAULT_NUM_TRAIN = 512
DEFAULT_NUM_TEST = 64


def image_rng(index, split, seed=0, stream="procedural"):
  """The numpy Generator of one procedural image.

  Args:
    index: int >= 0, the image's index within its split.
    split: "train" or "test".
    seed: int >= 0, the seed of the whole image family.
    stream: a key of STREAMS, the generator the image is for.

  Returns:
    np.random.Generator seeded from (seed, split id, index), and the
    stream's id after them unless it is 0 (so stream 0's images are those
    of before streams existed).
  """
  if split not in SPLITS:
    raise UserError(f"procedural image split {split!r} is unknown; expected "
                    f"one of {tuple(SPLITS)}")
  if int(index) < 0 or int(seed) < 0:
    raise UserError(f"procedural image index {index} and seed {seed} must be "
                    f">= 0")
  entropy = [int(seed), SPLITS[split], int(index)]
  if STREAMS[stream]:
    entropy.append(STREAMS[stream])
  return np.random.default_rng(np.random.SeedSequence(entropy))


def _grid(size):
  """Pixel-centre coordinates (y, x), each float64 [size, size] in (0, 1)."""
  c = (np.arange(size) + 0.5) / size
  return np.meshgrid(c, c, indexing="ij")


def _normalise(x):
  """float [h, w] -> float64 [h, w] in [0, 1] (constant input -> 0.5)."""
  x = np.asarray(x, np.float64)
  lo, hi = float(x.min()), float(x.max())
  if hi - lo < 1e-12:
    return np.full(x.shape, 0.5)
  return (x - lo) / (hi - lo)


def _edge(signed_distance, rng, size):
  """Coverage in [0, 1] from a signed distance (< 0 inside, in image units).

  Hard edges are a binary mask; soft edges a sigmoid 0.5 to 12 pixels wide.
  """
  if rng.random() < 0.5:
    return (signed_distance < 0).astype(np.float64)
  width = np.exp(rng.uniform(np.log(0.5), np.log(12.0))) / size
  return special.expit(-signed_distance / width)


def smooth_field(rng, size):
  """Gaussian-filtered noise at random scales. Returns float64 [size, size]."""
  out = np.zeros((size, size))
  for _ in range(int(rng.integers(1, 3))):
    sigma = np.exp(rng.uniform(np.log(0.7), np.log(size / 6)))
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma,
                                    mode="wrap")
    out += rng.uniform(0.3, 1.0) * noise / (noise.std() + 1e-12)
  if rng.random() < 0.3:  # soft threshold: blobs with edges of random width
    out = np.tanh(rng.uniform(1.0, 8.0) * (out - rng.uniform(-0.5, 0.5)))
  return out


def _shape_distance(rng, y, x):
  """Signed distance [size, size] of one random shape (< 0 inside)."""
  cy, cx = rng.uniform(-0.1, 1.1, 2)
  r = np.exp(rng.uniform(np.log(0.03), np.log(0.4)))
  kind = rng.choice(("disk", "ellipse", "rectangle", "polygon"))
  dy, dx = y - cy, x - cx
  if kind == "disk":
    return np.hypot(dy, dx) - r
  theta = rng.uniform(0, np.pi)
  u = dx * np.cos(theta) + dy * np.sin(theta)
  v = -dx * np.sin(theta) + dy * np.cos(theta)
  if kind == "ellipse":
    a, b = r, r * rng.uniform(0.2, 1.0)
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)
  if kind == "rectangle":
    a, b = r, r * rng.uniform(0.1, 1.0)
    return np.maximum(np.abs(u) - a, np.abs(v) - b)
  # Convex polygon: intersection of half-planes at sorted random angles.
  n = int(rng.integers(3, 9))
  angles = np.sort(rng.uniform(0, 2 * np.pi, n))
  dist = np.full(y.shape, -np.inf)
  for a in angles:
    dist = np.maximum(dist, u * np.cos(a) + v * np.sin(a) - r)
  return dist


def shapes(rng, size):
  """Random shapes with hard or soft edges. Returns float64 [size, size]."""
  y, x = _grid(size)
  out = np.full((size, size), rng.uniform())
  if rng.random() < 0.3:  # a gentle gradient behind the shapes
    t = rng.uniform(0, 2 * np.pi)
    out += rng.uniform(0, 0.5) * (x * np.cos(t) + y * np.sin(t))
  for _ in range(int(rng.integers(1, 16))):
    mask = _edge(_shape_distance(rng, y, x), rng, size)
    out = out * (1 - mask) + rng.uniform() * mask
  return out


def edges(rng, size):
  """Sharp edges: regions cut by random lines, or steps. float64 [size, size]."""
  y, x = _grid(size)
  t = rng.uniform(0, 2 * np.pi)
  if rng.random() < 0.4:  # staircase along a random direction
    proj = (x - 0.5) * np.cos(t) + (y - 0.5) * np.sin(t)
    steps = int(rng.integers(2, 24))
    levels = rng.uniform(size=steps + 2)
    if rng.random() < 0.5:
      levels = np.sort(levels)
    k = np.clip(np.floor((proj + 0.75) / 1.5 * steps).astype(int), 0,
                steps + 1)
    return levels[k]
  out = np.zeros((size, size))
  for _ in range(int(rng.integers(1, 10))):  # random lines through the image
    t = rng.uniform(0, 2 * np.pi)
    py, px = rng.uniform(0, 1, 2)
    dist = (x - px) * np.cos(t) + (y - py) * np.sin(t)
    out += rng.uniform(-1, 1) * _edge(dist, rng, size)
  return out


def texture(rng, size):
  """Sinusoid sums, gratings, stripes or checkers. float64 [size, size]."""
  y, x = _grid(size)
  kind = rng.choice(("sinusoids", "grating", "checker"))
  if kind == "sinusoids":
    out = np.zeros((size, size))
    for _ in range(int(rng.integers(1, 8))):
      freq = np.exp(rng.uniform(np.log(1.0), np.log(size / 6)))
      t = rng.uniform(0, 2 * np.pi)
      phase = rng.uniform(0, 2 * np.pi)
      out += rng.uniform(0.2, 1.0) * np.sin(
          2 * np.pi * freq * (x * np.cos(t) + y * np.sin(t)) + phase)
    return out
  # Square waves with a random period (2 to size / 2 pixels) and duty cycle.
  t = rng.uniform(0, np.pi)
  u = x * np.cos(t) + y * np.sin(t)
  v = -x * np.sin(t) + y * np.cos(t)

  def square(w):
    period = np.exp(rng.uniform(np.log(3.0 / size), np.log(0.5)))
    duty = rng.uniform(0.2, 0.8)
    return (np.mod(w / period + rng.uniform(), 1.0) < duty).astype(np.float64)

  out = square(u)
  if kind == "checker":
    out = np.abs(out - square(v))  # XOR of two gratings
  if rng.random() < 0.4:
    out = ndimage.gaussian_filter(out, rng.uniform(0.5, 3.0), mode="wrap")
  return out


_BASIC = {"smooth": smooth_field, "shapes": shapes, "edges": edges,
          "texture": texture}


def mixture(rng, size):
  """Two or three basic images blended. Returns float64 [size, size]."""
  names = tuple(_BASIC)
  a = _normalise(_BASIC[rng.choice(names)](rng, size))
  b = _normalise(_BASIC[rng.choice(names)](rng, size))
  how = rng.choice(("sum", "product", "mask"))
  if how == "sum":
    w = rng.uniform(0.2, 0.8)
    return w * a + (1 - w) * b
  if how == "product":
    return a * (rng.uniform(0.3, 1.0) + b)
  # One image inside a shape (or a smooth/threshold mask), the other outside.
  mask = _normalise(_BASIC[rng.choice(("shapes", "smooth", "edges"))](rng,
                                                                      size))
  return a * mask + b * (1 - mask)


_FAMILY_FUNCTIONS = dict(_BASIC, mixture=mixture)


def procedural_image(index, split, size=DEFAULT_SIZE, seed=0, family=None):
  """One deterministic procedural image.

  Args:
    index: int >= 0, the image's index within its split.
    split: "train" or "test" (the split is part of the seed, so train and
      test images differ for every index).
    size: int >= 8, the side in pixels.
    seed: int >= 0, the seed of the whole image family.
    family: None (random per image, see FAMILY_WEIGHTS) or one of FAMILIES,
      to force a family (the other random draws are unchanged).

  Returns:
    float32 [size, size] in [0, 1] (min 0 and max 1 unless constant); the
    same bytes for the same arguments.

  Raises:
    UserError: unknown split or family, size < 8, negative index or seed.
  """
  if int(size) < 8:
    raise UserError(f"procedural image size {size} must be at least 8")
  rng = image_rng(index, split, seed)
  chosen = FAMILIES[int(rng.choice(len(FAMILIES), p=FAMILY_WEIGHTS))]
  if family is not None:
    if family not in FAMILIES:
      raise UserError(f"procedural image family {family!r} is unknown; "
                      f"expected one of {FAMILIES}")
    chosen = family
  return _finish(_FAMILY_FUNCTIONS[chosen](rng, int(size)), rng)


def _finish(image, rng):
  """An image normalised to [0, 1], with a random gamma, inverted half the
  time: float32 [h, w]."""
  image = _normalise(image)
  gamma = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
  image = image ** gamma
  if rng.random() < 0.5:
    image = 1.0 - image
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def dead_leaves(rng, size, min_radius=1.5, coverage=6.0):
  """Opaque disks fallen on each other: float64 [size, size].

  Radii follow the density r^-3 from `min_radius` pixels to a random
  maximum of size / 8 to size (the scale-invariant law of the model). Disk
  k lies on top of every disk after it, and enough disks are drawn to cover
  the image `coverage` times over on average; the few pixels none covers
  (e^-coverage of them) take the level of the nearest covered pixel. A disk
  is one gray level, or with probability 0.3 a gray ramp across it. A blur
  of 0 to 1 pixel (half the images) softens the edges as a lens would.
  """
  size = int(size)
  max_radius = size * np.exp(rng.uniform(np.log(1 / 8), 0.0))
  lo, hi = min_radius ** -2.0, max_radius ** -2.0
  # Mean disk area under the r^-3 law, and the count for the coverage over
  # the centres' square (the image and a margin of 0.1 of it each side).
  mean_area = np.pi * np.log(max_radius / min_radius) / (0.5 * (lo - hi))
  n = int(np.ceil(coverage * (1.2 * size) ** 2 / mean_area))
  radii = (lo - rng.uniform(size=n) * (lo - hi)) ** -0.5
  centres = rng.uniform(-0.1 * size, 1.1 * size, (n, 2))
  levels = rng.uniform(size=n)
  slopes = np.where(rng.uniform(size=n) < 0.3,
                    rng.uniform(-0.5, 0.5, n) / radii, 0.0)
  angles = rng.uniform(0, 2 * np.pi, n)
  # Z-buffer: each pixel keeps the lowest index of the disks over it. Disks
  # of one bounding-box half width are rasterised together.
  front = np.full(size * size, n)
  half = np.ceil(radii).astype(int)
  for k in np.unique(half):
    ids = np.flatnonzero(half == k)
    offsets = np.arange(-k, k + 1)
    ys = np.floor(centres[ids, 0])[:, None, None] + offsets[None, :, None]
    xs = np.floor(centres[ids, 1])[:, None, None] + offsets[None, None, :]
    dy = ys + 0.5 - centres[ids, 0][:, None, None]
    dx = xs + 0.5 - centres[ids, 1][:, None, None]
    inside = ((dy * dy + dx * dx < radii[ids][:, None, None] ** 2) &
              (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size))
    pixel = (ys * size + xs).astype(np.int64)
    owner = np.broadcast_to(ids[:, None, None], inside.shape)
    np.minimum.at(front, pixel[inside], owner[inside])
  covered = front < n
  if not covered.any():
    return np.full((size, size), rng.uniform())
  y, x = np.divmod(np.arange(size * size), size)
  k = np.minimum(front, n - 1)
  along = ((x + 0.5 - centres[k, 1]) * np.cos(angles[k]) +
           (y + 0.5 - centres[k, 0]) * np.sin(angles[k]))
  out = (levels[k] + slopes[k] * along).reshape(size, size)
  covered = covered.reshape(size, size)
  if not covered.all():
    nearest = ndimage.distance_transform_edt(
        ~covered, return_distances=False, return_indices=True)
    out = out[tuple(nearest)]
  if rng.random() < 0.5:
    out = ndimage.gaussian_filter(out, rng.uniform(0.0, 1.0), mode="nearest")
  return out


def dead_leaves_image(index, split, size=DEFAULT_SIZE, seed=0):
  """One deterministic dead-leaves image (`dead_leaves`), finished as the
  procedural images are (normalised, random gamma, inverted half the time).

  Args:
    index: int >= 0, the image's index within its split.
    split: "train" or "test".
    size: int >= 8, the side in pixels.
    seed: int >= 0, the seed of the whole image family.

  Returns:
    float32 [size, size] in [0, 1]; the same bytes for the same arguments.

  Raises:
    UserError: unknown split, size < 8, negative index or seed.
  """
  if int(size) < 8:
    raise UserError(f"dead-leaves image size {size} must be at least 8")
  rng = image_rng(index, split, seed, stream="dead_leaves")
  return _finish(dead_leaves(rng, int(size)), rng)


# The image sources this module generates, by their name in an image spec
# (`data.images`): each takes (index, split) and returns a float32 image.
SOURCES = {"procedural": procedural_image, "dead_leaves": dead_leaves_image}


def parse_count(text, source="procedural"):
  """"N" -> (N train images, max(1, N // 8) test images); "" -> defaults.
  `source` names the image source in the error.

  Raises:
    UserError: text is not a positive integer.
  """
  if not text:
    return DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST
  try:
    n = int(text)
  except ValueError:
    n = 0
  if n < 1:
    raise UserError(f"image source {source}:{text} needs a positive image "
                    f"count N, as in {source}:512")
  return n, max(1, n // 8)
