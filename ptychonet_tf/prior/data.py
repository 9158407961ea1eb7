"""Training data of the prior: random noisy patches of images, as a tf.data pipeline.

The source images (any spec of `data.images.open_image_pools`: the embedded
default photographs, procedural images, a folder, several joined by '+') are
read once into one flat float32 buffer. Every patch is then cut by TensorFlow
ops from stateless random draws seeded by (seed, patch index), so the stream
of patches depends only on the seed, and a resumed run that starts at patch
index `step * batch_size` gets the patches the killed run would have seen:

  photographs vs procedural   a share `procedural_fraction` of the patches
                              come from procedural images, the rest from the
                              others (each group: uniform over its images)
  scale                       half of the patches (images large enough) are
                              cut at twice the size and averaged 2x2
  dihedral                    a random one of the 8 flips/rotations
  noise                       sigma ~ uniform[0, sigma_max], white Gaussian

`validation_set` holds fixed clean crops and their noisy copies at given
noise levels for the PSNR summaries during training.
"""
import numpy as np
import tensorflow as tf

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.utils.errors import UserError


def load_pool(spec, split="train"):
  """The images of one split of an image source, as float32 [h, w] arrays.

  Returns:
    (images, is_procedural): a list of arrays in [0, 1] and a matching list
    of bools.
  """
  train, test = images_lib.open_image_pools(spec)
  refs = train if split == "train" else test
  cache = images_lib.ImageCache()
  return ([cache(r) for r in refs], [r.kind == "procedural" for r in refs])


class PatchSource:
  """Random patches of a fixed list of images, cut by TensorFlow ops.

  Args:
    images: float32 arrays [h, w] in [0, 1].
    is_procedural: one bool per image (the two sampling groups).
    config: PatchConfig.

  Raises:
    UserError: no image is at least patch_size a side.
  """

  def __init__(self, images, is_procedural, config):
    self.config = config.validate()
    p = config.patch_size
    kept = [(np.asarray(im, np.float32), bool(proc))
            for im, proc in zip(images, is_procedural) if min(im.shape) >= p]
    if not kept:
      raise UserError(f"no training image is at least {p}x{p} pixels (the "
                      f"patch size); use smaller patches or larger images")
    # Procedural images first, then the others: two contiguous groups.
    kept.sort(key=lambda item: not item[1])
    self.num_procedural = sum(proc for _, proc in kept)
    self.num_images = len(kept)
    sizes = [im.size for im, _ in kept]
    self.flat = tf.constant(np.concatenate([im.ravel() for im, _ in kept]))
    self.offsets = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64)
    self.heights = tf.constant([im.shape[0] for im, _ in kept], tf.int64)
    self.widths = tf.constant([im.shape[1] for im, _ in kept], tf.int64)
    if self.num_procedural in (0, self.num_images):
      self.procedural_fraction = float(self.num_procedural > 0)
    else:
      self.procedural_fraction = config.procedural_fraction

  def patch(self, index):
    """One training example for patch number `index` (an int64 scalar).

    Returns:
      dict: "clean" and "noisy" float32 [p, p], "sigma" float32 [].
    """
    c = self.config
    p = c.patch_size
    seed = tf.stack([tf.cast(c.seed, tf.int64), tf.cast(index, tf.int64)])
    u = tf.random.stateless_uniform([8], seed, dtype=tf.float32)
    procedural = u[0] < self.procedural_fraction
    n_proc, n_all = self.num_procedural, self.num_images
    first = tf.where(procedural, tf.constant(0, tf.int64),
                     tf.constant(n_proc, tf.int64))
    count = tf.where(procedural, tf.constant(n_proc, tf.int64),
                     tf.constant(n_all - n_proc, tf.int64))
    i = first + tf.minimum(
        tf.cast(u[1] * tf.cast(count, tf.float32), tf.int64), count - 1)
    h, w, offset = self.heights[i], self.widths[i], self.offsets[i]
    big = tf.minimum(h, w) >= 2 * p
    scale = tf.where(tf.logical_and(big, u[2] < c.scale_probability),
                     tf.constant(2, tf.int64), tf.constant(1, tf.int64))
    crop = p * scale
    y = tf.cast(u[3] * tf.cast(h - crop + 1, tf.float32), tf.int64)
    x = tf.cast(u[4] * tf.cast(w - crop + 1, tf.float32), tf.int64)
    y = tf.minimum(y, h - crop)
    x = tf.minimum(x, w - crop)
    r = tf.range(p, dtype=tf.int64)
    patch = 0.0
    # The four taps of a 2x2 average; at scale 1 all four are one pixel.
    for dy in (0, 1):
      for dx in (0, 1):
        rows = y + scale * r + dy * (scale - 1)
        cols = x + scale * r + dx * (scale - 1)
        idx = offset + rows[:, None] * w + cols[None, :]
        patch += 0.25 * tf.gather(self.flat, idx)
    k = tf.cast(u[5] * 4.0, tf.int32)
    patch = tf.image.rot90(patch[..., None], k)[..., 0]
    patch = tf.where(u[6] < 0.5, patch, patch[:, ::-1])
    sigma = u[7] * c.sigma_max
    noise = tf.random.stateless_normal([p, p], seed + [0, 1 << 40])
    return {"clean": patch, "noisy": patch + sigma * noise, "sigma": sigma}

  def dataset(self, batch_size, start_step=0, num_steps=None):
    """Batches of patches: step s holds patches s*B .. (s+1)*B - 1.

    Args:
      batch_size: patches per batch (B).
      start_step: the first batch (a resumed run's step).
      num_steps: batches to yield (None: without end).

    Returns:
      tf.data.Dataset of dicts: "clean", "noisy" [B, p, p], "sigma" [B].
    """
    start = int(start_step) * batch_size
    stop = None if num_steps is None else start + int(num_steps) * batch_size
    ds = (tf.data.Dataset.range(start, stop) if stop is not None else
          tf.data.Dataset.range(start, np.iinfo(np.int64).max))
    ds = ds.map(self.patch, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


class PairSource:
  """Random patches of fixed (noisy, clean) image pairs, cut by TensorFlow ops.

  The pairs are what a prior step inside plug-and-play is given and the
  truth in the same units (`prior.pairs`), so the noise is the one the data
  steps leave, not white noise. Each patch: a random pair, a random
  position, one of the 8 flips and rotations (both images alike), and the
  pair's noise level as sigma.

  Args:
    inputs: float32 [n, h, w], the noisy images.
    targets: float32 [n, h, w], the clean images.
    sigmas: float32 [n], the noise level the prior is told for each.
    patch_size: side of the patches (at most h and w).
    seed: seed of the stream.
  """

  def __init__(self, inputs, targets, sigmas, patch_size, seed=0):
    inputs = np.asarray(inputs, np.float32)
    targets = np.asarray(targets, np.float32)
    sigmas = np.asarray(sigmas, np.float32).reshape(-1)
    if (inputs.ndim != 3 or inputs.shape != targets.shape
        or len(sigmas) != len(inputs)):
      raise UserError(f"pairs of shapes {inputs.shape}, {targets.shape} and "
                      f"sigma {sigmas.shape}: expected [n, h, w] twice and [n]")
    if min(inputs.shape[1:]) < patch_size:
      raise UserError(f"pair images {inputs.shape[1:]} are smaller than the "
                      f"patch size {patch_size}")
    self.patch_size = patch_size
    self.seed = seed
    self.num_pairs, self.height, self.width = inputs.shape
    self.inputs = tf.constant(inputs.reshape(-1))
    self.targets = tf.constant(targets.reshape(-1))
    self.sigmas = tf.constant(sigmas)

  def patch(self, index):
    """One training example for patch number `index` (as PatchSource's)."""
    p = self.patch_size
    seed = tf.stack([tf.cast(self.seed, tf.int64) + (1 << 20),
                     tf.cast(index, tf.int64)])
    u = tf.random.stateless_uniform([5], seed, dtype=tf.float32)
    n, h, w = self.num_pairs, self.height, self.width
    i = tf.minimum(tf.cast(u[0] * n, tf.int64), n - 1)
    y = tf.minimum(tf.cast(u[1] * (h - p + 1), tf.int64), h - p)
    x = tf.minimum(tf.cast(u[2] * (w - p + 1), tf.int64), w - p)
    r = tf.range(p, dtype=tf.int64)
    idx = i * h * w + (y + r)[:, None] * w + (x + r)[None, :]
    both = tf.stack([tf.gather(self.inputs, idx),
                     tf.gather(self.targets, idx)], -1)
    both = tf.image.rot90(both, tf.cast(u[3] * 4.0, tf.int32))
    both = tf.where(u[4] < 0.5, both, both[:, ::-1])
    return {"clean": both[..., 1], "noisy": both[..., 0],
            "sigma": self.sigmas[i]}


class MixedSource:
  """Patches of a PatchSource, a share `pair_fraction` of them replaced by
  PairSource patches (drawn from the same index: still a pure function of
  (seed, index), so a resumed run sees the same stream)."""

  def __init__(self, patches, pairs, pair_fraction, seed=0):
    self.patches = patches
    self.pairs = pairs
    self.pair_fraction = float(pair_fraction)
    self.seed = seed
    self.num_images = patches.num_images
    self.num_procedural = patches.num_procedural

  def patch(self, index):
    seed = tf.stack([tf.cast(self.seed, tf.int64) + (2 << 20),
                     tf.cast(index, tf.int64)])
    u = tf.random.stateless_uniform([], seed, dtype=tf.float32)
    return tf.cond(u < self.pair_fraction, lambda: self.pairs.patch(index),
                   lambda: self.patches.patch(index))

  dataset = PatchSource.dataset


def center_crop(image, size):
  """The central size x size crop of [h, w] (the whole image if smaller)."""
  h, w = image.shape
  top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
  return image[top:top + size, left:left + size]


def noisy_copies(clean, sigmas, seed):
  """{sigma: clean + sigma * N(0, 1)} for a float32 stack [n, h, w] (float32)."""
  rng = np.random.default_rng(seed)
  noise = rng.standard_normal(clean.shape).astype(np.float32)
  return {float(s): (clean + np.float32(s) * noise).astype(np.float32)
          for s in sigmas}


def validation_set(images, size, sigmas, seed=0):
  """Fixed clean crops of `images` and their noisy copies.

  Args:
    images: float32 arrays [h, w] (each at least size a side).
    size: the side of the central crops.
    sigmas: noise levels.
    seed: the noise seed.

  Returns:
    (clean [n, size, size], {sigma: noisy [n, size, size]}), float32.
  """
  crops = [center_crop(im, size) for im in images if min(im.shape) >= size]
  if not crops:
    raise UserError(f"no validation image is at least {size}x{size} pixels")
  clean = np.stack(crops).astype(np.float32)
  return clean, noisy_copies(clean, sigmas, seed)


def psnr(estimate, truth, peak=1.0):
  """Mean PSNR in dB over the first axis of float arrays [n, ...] (numpy)."""
  estimate = np.asarray(estimate, np.float64)
  truth = np.asarray(truth, np.float64)
  mse = np.mean((estimate - truth) ** 2, axis=tuple(range(1, truth.ndim)))
  return float(np.mean(10 * np.log10(peak ** 2 / np.maximum(mse, 1e-20))))
