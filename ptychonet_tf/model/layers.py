"""Keras layers of PtychoNet: stitching per-pattern patches into the object.

`StitchPatches` is the paper's Algorithm 1 generalised to a per-pixel weight:
every patch, multiplied by a fixed weight map w [h, w], is added into an
[H, W] canvas at its layout position with `tf.tensor_scatter_nd_add`, and each
pixel is divided by the summed weight of the windows that cover it (0 where
no window does). With w = 1 (`weighting="uniform"`) this is exactly the
paper's sum / max(count, 1). With `weighting="probe"`, w = |P|^2 / max|P|^2 +
1e-3: a pattern only carries information about the illuminated part of its
window, so its guesses in the dark corners barely count. For the 64x64
windows of configs/small_dense.flags, whose probe lights 40% of the window,
this matters a lot: `tools/stitch_ceiling.py` stitches perfect predictions
inside the lit part (and the mean outside) and gets 20.3 / 18.0 dB amplitude /
phase with uniform weights against 37.6 / 35.5 dB with probe weights
(tests/test_model.py::test_probe_weighting_ignores_dark_corners checks the
effect). The layout and weights are fixed, so the normalisation is a
constant.
"""
import numpy as np
import tensorflow as tf
import keras

from ptychonet_tf.physics import layouts

STITCH_METHODS = ("scatter", "gather")
STITCH_WEIGHTINGS = ("probe", "uniform")
# Added to |P|^2 / max|P|^2 so that pixels seen only by dark window corners
# still get the plain mean of their patches instead of 0 / 0.
PROBE_WEIGHT_FLOOR = 1e-3


def stitch_weights(probe, weighting):
  """float32 numpy [h, w]: the per-pixel stitching weight of a window.

  Args:
    probe: complex [h, w] the probe.
    weighting: "uniform" (all ones: the paper's Algorithm 1) or "probe"
      (|P|^2 / max|P|^2 + PROBE_WEIGHT_FLOOR).
  """
  probe = np.asarray(probe)
  if weighting == "uniform":
    return np.ones(probe.shape, np.float32)
  if weighting == "probe":
    power = np.abs(probe.astype(np.complex128)) ** 2
    peak = power.max()
    if not np.isfinite(peak) or peak <= 0:
      raise ValueError("probe weighting needs a probe with finite, nonzero "
                       "intensity")
    return (power / peak + PROBE_WEIGHT_FLOOR).astype(np.float32)
  raise ValueError(f"stitch weighting {weighting!r} is not one of "
                   f"{STITCH_WEIGHTINGS}")


def overlap_counts(layout, object_shape, probe_shape, pixel_weights=None):
  """numpy [H, W]: how many windows of `layout` cover each pixel (int32), or
  with `pixel_weights` [h, w] the summed weight of those windows (float64)."""
  if pixel_weights is None:
    counts = np.zeros(object_shape, np.int32)
    for top, bottom, left, right in np.asarray(layout):
      counts[top:bottom, left:right] += 1
    return counts
  weights = np.asarray(pixel_weights, np.float64)
  if weights.shape != tuple(probe_shape):
    raise ValueError(f"pixel weights of shape {weights.shape} do not match the "
                     f"{probe_shape[0]}x{probe_shape[1]} windows")
  total = np.zeros(object_shape, np.float64)
  for top, bottom, left, right in np.asarray(layout):
    total[top:bottom, left:right] += weights
  return total


def flat_patch_indices(layout, object_shape, probe_shape):
  """int32 numpy [N, h, w]: raveled object index (row * W + col) of every patch pixel."""
  layout = np.asarray(layout, np.int64)
  h, w = probe_shape
  rows = layout[:, 0:1] + np.arange(h)[None, :]
  cols = layout[:, 2:3] + np.arange(w)[None, :]
  return (rows[:, :, None] * object_shape[1] + cols[:, None, :]).astype(np.int32)


def gather_table(layout, object_shape, probe_shape):
  """The inverse of `flat_patch_indices` as a dense table.

  Returns:
    int32 numpy [H*W, K], K the largest overlap count: row p lists the indices
    (into the raveled N*h*w patch pixels) of the patch pixels that land on
    object pixel p, padded with N*h*w (an appended zero).
  """
  index = flat_patch_indices(layout, object_shape, probe_shape).ravel()
  size = int(np.prod(object_shape))
  pad = index.size
  counts = np.bincount(index, minlength=size)
  k = max(int(counts.max()), 1)
  order = np.argsort(index, kind="stable")
  sorted_pixels = index[order]
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.arange(index.size) - starts[sorted_pixels]
  table = np.full((size, k), pad, np.int32)
  table[sorted_pixels, slot] = order
  return table


@keras.saving.register_keras_serializable(package="ptychonet_tf")
class StitchPatches(keras.layers.Layer):
  """Averages N per-position patches into the object (PtychoNet Algorithm 1,
  optionally weighted per window pixel).

  Input:
    patches: float [B, N, h, w] or [B, N, h, w, C] (any float dtype; the
      layer computes in its own dtype, float32 by default).
  Output:
    float32 [B, H, W] or [B, H, W, C]: at each pixel the mean of the patch
    values that cover it (weighted by `pixel_weights` when given), 0 where
    no window does.

  Args:
    layout: int [N, 4] rows (top, bottom, left, right); bottom - top = h and
      right - left = w for every row, every window inside the object.
    object_shape: (H, W).
    pixel_weights: None (every pixel of a window counts once: the paper) or
      float [h, w] non-negative weights, the same for every window (see
      `stitch_weights`).
    method: "scatter" sums with one `tf.tensor_scatter_nd_add` whose slices
      are the trailing (batch * channel) axis, then multiplies by
      1 / max(count, 1); "gather" reads every object pixel's covering patch
      pixels through a precomputed [H*W, K] index table and sums them. Both
      give the same result; neither needs XLA.
    jit_compile: run the stitching (only it) as an XLA-compiled function.
      On CPU this makes the scatter ~15x faster (100 64x64 patches: 17 ms
      -> 1.2 ms), so stitching stays a few % of inference. The SavedModel
      export turns it off (serving graphs must not need XLA); the result is
      the same up to float rounding.
  """

  def __init__(self, layout, object_shape, method="scatter", jit_compile=True,
               pixel_weights=None, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if method not in STITCH_METHODS:
      raise ValueError(f"stitch method {method!r} is not one of {STITCH_METHODS}")
    self.layout = np.asarray(layout, np.int32)
    self.object_shape = tuple(int(s) for s in object_shape)
    self.method = method
    self.jit_compile = bool(jit_compile)
    self._compiled = None
    top, bottom, left, right = self.layout[0]
    self._probe_shape = (int(bottom - top), int(right - left))
    layouts.check_layout(self.layout, self.object_shape, self._probe_shape)
    if pixel_weights is None:
      self.pixel_weights = None
      counts = overlap_counts(self.layout, self.object_shape, self._probe_shape)
      inverse = 1.0 / np.maximum(counts, 1)
    else:
      self.pixel_weights = np.asarray(pixel_weights, np.float32)
      if (not np.all(np.isfinite(self.pixel_weights)) or
          np.any(self.pixel_weights < 0)):
        raise ValueError("pixel weights must be finite and non-negative")
      total = overlap_counts(self.layout, self.object_shape, self._probe_shape,
                             self.pixel_weights)
      inverse = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), 0.0)
    self._inverse_counts = inverse.reshape(-1, 1).astype(np.float32)
    if method == "scatter":
      self._index = flat_patch_indices(
          self.layout, self.object_shape, self._probe_shape).reshape(-1, 1)
    else:
      self._table = gather_table(self.layout, self.object_shape,
                                 self._probe_shape)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], *self.object_shape, *input_shape[4:])

  def call(self, patches):
    patches = tf.cast(tf.convert_to_tensor(patches), self.compute_dtype)
    if self.jit_compile:
      if self._compiled is None:
        self._compiled = tf.function(self._stitch, jit_compile=True)
      return self._compiled(patches)
    return self._stitch(patches)

  def _stitch(self, patches):
    n, h, w = patches.shape[1:4]
    if (n, h, w) != (len(self.layout), *self._probe_shape):
      raise ValueError(f"StitchPatches expects patches [B, {len(self.layout)}, "
                       f"{self._probe_shape[0]}, {self._probe_shape[1]}, ...], "
                       f"got {patches.shape}")
    channels = tuple(int(d) for d in patches.shape[4:])
    c = int(np.prod(channels)) if channels else 1
    big_h, big_w = self.object_shape
    batch = tf.shape(patches)[0]
    inverse = tf.constant(self._inverse_counts, self.compute_dtype)
    if self.pixel_weights is not None:
      weights = tf.constant(self.pixel_weights, self.compute_dtype)
      patches = patches * tf.reshape(weights, [1, 1, h, w] + [1] * len(channels))
    if self.method == "scatter":
      # [B, N, h, w, C] -> [N*h*w, B*C]: the batch rides along as the slice
      # of one scatter, so the op is N*h*w row updates whatever B is.
      x = tf.reshape(patches, [batch, n * h * w, c])
      x = tf.reshape(tf.transpose(x, [1, 0, 2]), [n * h * w, batch * c])
      canvas = tf.zeros([big_h * big_w, batch * c], self.compute_dtype)
      canvas = tf.tensor_scatter_nd_add(canvas, self._index, x)
      canvas = canvas * inverse  # [H*W, B*C]
      canvas = tf.transpose(tf.reshape(canvas, [big_h * big_w, batch, c]),
                            [1, 0, 2])
    else:
      x = tf.reshape(patches, [batch, n * h * w, c])
      x = tf.pad(x, [[0, 0], [0, 1], [0, 0]])  # index N*h*w reads 0
      gathered = tf.gather(x, self._table, axis=1)  # [B, H*W, K, C]
      canvas = tf.reduce_sum(gathered, axis=2) * inverse
    return tf.reshape(canvas, [-1, big_h, big_w, *channels])

  def get_config(self):
    config = super().get_config()
    config.update(layout=self.layout.tolist(), object_shape=list(self.object_shape),
                  method=self.method, jit_compile=self.jit_compile,
                  pixel_weights=(None if self.pixel_weights is None
                                 else self.pixel_weights.tolist()))
    return config
