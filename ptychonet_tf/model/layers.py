"""Keras layers of PtychoNet: stitching per-pattern patches into the object.

`StitchPatches` is the paper's Algorithm 1 generalised to a per-pixel weight:
every patch, multiplied by a fixed weight map w [h, w], is added into an
[H, W] canvas at its layout position with `tf.tensor_scatter_nd_add`, and each
pixel is divided by the summed weight of the windows that cover it (0 where
no window does). With w = 1 (`weighting="uniform"`) this is exactly the
paper's sum / max(count, 1). With `weighting="probe"`, w = |P|^2 / max|P|^2 +
1e-3: a pattern only carries information about the illuminated part of its
window, so its guesses in the dark corners barely count (what that is worth,
measured with `tools/stitch_ceiling.py`: docs/training.md, "Two departures").
The layout and weights are fixed, so the normalisation is a constant. The layer computes `physics.windows.Windows.normalized_stitch`, the
package's one window operator.
"""
import numpy as np
import tensorflow as tf
import keras

from ptychonet_tf.physics import windows

# The `windows.Windows.stitch` methods the layer offers.
STITCH_METHODS = ("scatter", "gather")
STITCH_WEIGHTINGS = ("probe", "uniform")
# Added to |P|^2 / max|P|^2 so that pixels seen only by dark window corners
# still get the plain mean of their patches instead of 0 / 0.
PROBE_WEIGHT_FLOOR = 1e-3


def stitch_weights(probe, weighting):
  """float32 numpy [h, w]: the per-pixel stitching weight of a window.

  Args:
    probe: complex [h, w] the probe (a tensor gives a float32 tensor; a
      tensor [..., h, w] of probes, one weight per probe).
    weighting: "uniform" (all ones: the paper's Algorithm 1) or "probe"
      (|P|^2 / max|P|^2 + PROBE_WEIGHT_FLOOR).
  """
  if tf.is_tensor(probe) and weighting == "probe":
    # A probe given at run time (the any_scan signature), in float32.
    power = tf.abs(tf.cast(probe, tf.complex64)) ** 2
    return (power / tf.reduce_max(power, axis=(-2, -1), keepdims=True) +
            PROBE_WEIGHT_FLOOR)
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
    method: the `windows.Windows.stitch` method: "scatter" sums with one
      `tf.tensor_scatter_nd_add` whose slices are the trailing (batch *
      channel) axis, then divides by the coverage; "gather" reads every
      object pixel's covering patch pixels through a precomputed [H*W, K]
      index table and sums them. Both give the same result; neither needs
      XLA.
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
    self._windows = windows.Windows.from_layout(self.layout,
                                                self.object_shape)
    if pixel_weights is None:
      self.pixel_weights = None
    else:
      self.pixel_weights = np.asarray(pixel_weights, np.float32)
      if (not np.all(np.isfinite(self.pixel_weights)) or
          np.any(self.pixel_weights < 0)):
        raise ValueError("pixel weights must be finite and non-negative")
    # The normalisation (and for "gather" the table) is computed here, once.
    self._windows.inverse_coverage(self.pixel_weights)
    if method == "gather":
      self._windows.gather_table()

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
    if (n, h, w) != (len(self.layout), *self._windows.probe_shape):
      raise ValueError(f"StitchPatches expects patches [B, {len(self.layout)}, "
                       f"{self._windows.probe_shape[0]}, "
                       f"{self._windows.probe_shape[1]}, ...], got "
                       f"{patches.shape}")
    return self._windows.normalized_stitch(
        patches, self.pixel_weights, self.method,
        channels=patches.shape.rank - 4)

  def get_config(self):
    config = super().get_config()
    config.update(layout=self.layout.tolist(), object_shape=list(self.object_shape),
                  method=self.method, jit_compile=self.jit_compile,
                  pixel_weights=(None if self.pixel_weights is None
                                 else self.pixel_weights.tolist()))
    return config
