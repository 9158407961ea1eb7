"""PtychoNet training losses (pure functions, float32).

All losses compare per-pattern patch predictions and return one value per
scan, float32 [B] (the mean over the scan's N patterns and pixels), ready for
`tf.nn.compute_average_loss` under a distribution strategy.

- MSE (eq. 5): mean (A_hat - A)^2 + mean (phi_hat - phi)^2 over the object
  patches O_j = O[t:b, l:r]; with per-pixel window weights w [h, w] (the
  model's probe stitching weights) the weighted mean sum w e^2 / sum w.
- DFT loss (eqs. 6-7): mean (|F(P * A_hat exp(i phi_hat))| - sqrt(I_j))^2, the
  misfit between the predicted patches' diffraction amplitudes and the measured
  ones, with the known probe P and F = `physics.forward.far_field` (unitary,
  centred DFT: fftshift(fft2(.)) / sqrt(h*w); zero frequency at (h//2, w//2)),
  the convention the data were simulated with.
- DSE = MSE + lambda * DFT.
"""
import tensorflow as tf

from ptychonet_tf.physics import forward

LOSSES = ("mse", "dse")

# The one gradient-safe |z|, shared with the physics (kept importable here).
safe_magnitude = forward.magnitude


def _mean_per_example(x):
  return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def mse_loss(pred_amplitude, pred_phase, true_amplitude, true_phase,
             weights=None):
  """Eq. 5. Inputs float [B, ..., h, w] of equal shape; returns float32 [B].

  `weights`: None, or float [h, w] per-pixel weights (broadcast over the
  leading axes); the loss is then sum w e^2 / sum w per scan.
  """
  da = tf.cast(pred_amplitude, tf.float32) - tf.cast(true_amplitude, tf.float32)
  dp = tf.cast(pred_phase, tf.float32) - tf.cast(true_phase, tf.float32)
  error = tf.square(da) + tf.square(dp)
  if weights is None:
    return _mean_per_example(error)
  weights = tf.convert_to_tensor(weights, tf.float32)
  weights = weights / tf.reduce_mean(weights)
  return _mean_per_example(error * weights)


def dft_loss(pred_amplitude, pred_phase, probe, measured_amplitudes):
  """Eqs. 6-7: diffraction-amplitude misfit of the predicted patches.

  Args:
    pred_amplitude, pred_phase: float [B, N, h, w] predicted patches.
    probe: complex64 [h, w] the known probe.
    measured_amplitudes: float [B, N, h, w], sqrt of the measured intensities.

  Returns:
    float32 [B].
  """
  amp = tf.cast(pred_amplitude, tf.float32)
  phase = tf.cast(pred_phase, tf.float32)
  patch = tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))
  probe = tf.convert_to_tensor(probe, tf.complex64)
  predicted = safe_magnitude(forward.far_field(probe * patch))
  diff = predicted - tf.cast(measured_amplitudes, tf.float32)
  return _mean_per_example(tf.square(diff))


def dse_loss(pred_amplitude, pred_phase, true_amplitude, true_phase, probe,
             measured_amplitudes, dse_lambda=1.0, weights=None):
  """DSE = MSE (optionally weighted) + lambda * DFT loss; float32 [B]."""
  return (mse_loss(pred_amplitude, pred_phase, true_amplitude, true_phase,
                   weights) +
          dse_lambda * dft_loss(pred_amplitude, pred_phase, probe,
                                measured_amplitudes))


def object_mse(pred_amplitude, pred_phase, true_amplitude, true_phase,
               mask):
  """MSE of whole objects over a region, after removing the phase offset.

  The loss of a model's final (stitched and refined) object, in the
  convention of `evaluation.metrics.complex_metrics`: the constant phase
  theta that best aligns the estimate with the truth on the region (which
  ptychography cannot measure, and which refinement steps may shift) is
  removed first; then the mean over the region of (A_hat - A)^2 +
  wrap(phi_hat + theta - phi)^2, the phase error wrapped to (-pi, pi].

  Args:
    pred_amplitude, pred_phase, true_amplitude, true_phase: float [B, H, W].
    mask: float or bool [H, W], the region (e.g. the illuminated one).

  Returns:
    float32 [B].
  """
  pa, pp, ta, tp = (tf.cast(x, tf.float32) for x in (
      pred_amplitude, pred_phase, true_amplitude, true_phase))
  mask = tf.cast(mask, tf.float32)
  # theta = angle(sum_mask truth * conj(estimate)).
  weight = pa * ta * mask
  theta = tf.math.atan2(tf.reduce_sum(weight * tf.sin(tp - pp), (-2, -1)),
                        tf.reduce_sum(weight * tf.cos(tp - pp), (-2, -1)))
  dp = pp + theta[:, None, None] - tp
  dp = tf.math.atan2(tf.sin(dp), tf.cos(dp))
  error = (tf.square(pa - ta) + tf.square(dp)) * mask
  return tf.reduce_sum(error, axis=(-2, -1)) / tf.reduce_sum(mask)


def patch_loss(name, patches, true_patches, probe, measured_amplitudes,
               dse_lambda=1.0, weights=None):
  """The training loss `name` ("mse" or "dse") on dicts of patches; float32 [B].

  Args:
    patches, true_patches: {"amplitude", "phase"} float [B, N, h, w].
    probe: complex64 [h, w].
    measured_amplitudes: float [B, N, h, w].
    weights: None or float [h, w] per-pixel weights of the MSE term.
  """
  if name == "mse":
    return mse_loss(patches["amplitude"], patches["phase"],
                    true_patches["amplitude"], true_patches["phase"], weights)
  if name == "dse":
    return dse_loss(patches["amplitude"], patches["phase"],
                    true_patches["amplitude"], true_patches["phase"], probe,
                    measured_amplitudes, dse_lambda, weights)
  raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
