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
import dataclasses

import tensorflow as tf

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import operator as operator_lib

LOSSES = ("mse", "dse", "physics", "mse+physics")
NOISE_MODELS = operator_lib.NOISE_MODELS
# The Poisson deviance's floor, relative to the scan's mean measured
# intensity: keeps log(I_hat) finite where a predicted intensity is 0.
POISSON_FLOOR = 1e-6

# The one gradient-safe |z|, shared with the physics (kept importable here).
safe_magnitude = forward.magnitude


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A training loss: its name (LOSSES), the weight of its data term
  (dse_lambda, for "dse" and "mse+physics"), the data term's noise model
  (NOISE_MODELS, for "physics" and "mse+physics") and how the refinement
  epochs take the log of the final object's error (OBJECT_LOGS: "joint",
  ln(amplitude MSE + phase MSE); "parts", the mean of the two logs;
  "joint+parts", the mean of those two objectives)."""
  name: str = "mse"
  dse_lambda: float = 1.0
  noise_model: str = "gaussian"
  object_log: str = "joint"


OBJECT_LOGS = ("joint", "parts", "joint+parts")


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


def uses_objects(name):
  """Whether loss `name` compares with the true object (False: physics only)."""
  return name != "physics"


def data_misfit(spectra, measured_amplitudes, noise_model="gaussian"):
  """Misfit of predicted far fields to measured amplitudes; float32 [B].

  Args:
    spectra: complex64 [B, ..., h, w], predicted far fields F(P * O_j).
    measured_amplitudes: float [B, ..., h, w], sqrt of the measured
      intensities (any positive scale; in noise-free units as simulated).
    noise_model: "gaussian": mean (|F| - A)^2, the amplitude MSE; "poisson":
      the mean Poisson deviance of the intensities, I_hat - I - I ln(I_hat /
      I) with I_hat = |F|^2, I = A^2 (0 where they agree, up to the floor
      POISSON_FLOOR * mean I that keeps ln finite).
  """
  measured = tf.cast(measured_amplitudes, tf.float32)
  if noise_model == "gaussian":
    return _mean_per_example(tf.square(safe_magnitude(spectra) - measured))
  if noise_model == "poisson":
    predicted = tf.square(tf.math.real(spectra)) + tf.square(
        tf.math.imag(spectra))
    intensity = tf.square(measured)
    rank = len(intensity.shape)
    floor = POISSON_FLOOR * tf.reduce_mean(
        intensity, axis=list(range(1, rank)), keepdims=True)
    deviance = predicted - intensity - intensity * (
        tf.math.log(predicted + floor) - tf.math.log(intensity + floor))
    return _mean_per_example(deviance)
  raise ValueError(f"unknown noise model {noise_model!r}; expected one of "
                   f"{NOISE_MODELS}")


def _complex(amplitude, phase):
  amplitude = tf.cast(amplitude, tf.float32)
  phase = tf.cast(phase, tf.float32)
  return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))


def dft_loss(pred_amplitude, pred_phase, probe, measured_amplitudes,
             noise_model="gaussian"):
  """Eqs. 6-7: diffraction-amplitude misfit of the predicted patches.

  Args:
    pred_amplitude, pred_phase: float [B, N, h, w] predicted patches.
    probe: complex64 [h, w] the known probe.
    measured_amplitudes: float [B, N, h, w], sqrt of the measured intensities.
    noise_model: see `data_misfit`; "gaussian" is the paper's DFT loss.

  Returns:
    float32 [B].
  """
  probe = tf.convert_to_tensor(probe, tf.complex64)
  spectra = forward.far_field(probe * _complex(pred_amplitude, pred_phase))
  return data_misfit(spectra, measured_amplitudes, noise_model)


def object_misfit(amplitude, phase, probe, layout, measured_amplitudes,
                  noise_model="gaussian"):
  """The data misfit of whole objects: |F(P * O[t:b, l:r])| against the data.

  The self-supervised loss of a model's final object: no true object needed,
  blind to what ptychography cannot see (a constant phase offset, pixels no
  probe reaches).

  Args:
    amplitude, phase: float [B, H, W], the estimated objects.
    probe: complex64 [h, w].
    layout: int [N, 4], the scan's windows.
    measured_amplitudes: float [B, N, h, w].
    noise_model: see `data_misfit`.

  Returns:
    float32 [B].
  """
  probe = tf.convert_to_tensor(probe, tf.complex64)
  windows = forward.extract(_complex(amplitude, phase), layout, probe.shape)
  return data_misfit(forward.far_field(probe * windows), measured_amplitudes,
                     noise_model)


def dse_loss(pred_amplitude, pred_phase, true_amplitude, true_phase, probe,
             measured_amplitudes, dse_lambda=1.0, weights=None,
             noise_model="gaussian"):
  """DSE = MSE (optionally weighted) + lambda * DFT loss; float32 [B].

  With noise_model="poisson" the DFT term is the Poisson deviance
  (`data_misfit`), the patch term of "mse+physics".
  """
  return (mse_loss(pred_amplitude, pred_phase, true_amplitude, true_phase,
                   weights) +
          dse_lambda * dft_loss(pred_amplitude, pred_phase, probe,
                                measured_amplitudes, noise_model))


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
  amplitude, phase = object_mse_parts(pred_amplitude, pred_phase,
                                     true_amplitude, true_phase, mask)
  return amplitude + phase


def object_mse_parts(pred_amplitude, pred_phase, true_amplitude, true_phase,
                     mask):
  """`object_mse`'s two terms: the amplitude MSE and the (offset-removed,
  wrapped) phase MSE over the region, float32 [B] each."""
  pa, pp, ta, tp = (tf.cast(x, tf.float32) for x in (
      pred_amplitude, pred_phase, true_amplitude, true_phase))
  mask = tf.cast(mask, tf.float32)
  # theta = angle(sum_mask truth * conj(estimate)).
  weight = pa * ta * mask
  theta = tf.math.atan2(tf.reduce_sum(weight * tf.sin(tp - pp), (-2, -1)),
                        tf.reduce_sum(weight * tf.cos(tp - pp), (-2, -1)))
  dp = pp + theta[:, None, None] - tp
  dp = tf.math.atan2(tf.sin(dp), tf.cos(dp))
  area = tf.reduce_sum(mask)
  return (tf.reduce_sum(tf.square(pa - ta) * mask, axis=(-2, -1)) / area,
          tf.reduce_sum(tf.square(dp) * mask, axis=(-2, -1)) / area)


def patch_loss(name, patches, true_patches, probe, measured_amplitudes,
               dse_lambda=1.0, weights=None, noise_model="gaussian"):
  """The training loss `name` (one of LOSSES) on dicts of patches; float32 [B].

  Args:
    patches, true_patches: {"amplitude", "phase"} float [B, N, h, w];
      true_patches may be None for "physics".
    probe: complex64 [h, w].
    measured_amplitudes: float [B, N, h, w].
    dse_lambda: weight of the data term in "dse" and "mse+physics".
    weights: None or float [h, w] per-pixel weights of the MSE term.
    noise_model: the data term of "physics" and "mse+physics"
      (`data_misfit`); "dse" is always the paper's amplitude MSE.
  """
  if name == "physics":
    return dft_loss(patches["amplitude"], patches["phase"], probe,
                    measured_amplitudes, noise_model)
  if name == "mse+physics":
    return dse_loss(patches["amplitude"], patches["phase"],
                    true_patches["amplitude"], true_patches["phase"], probe,
                    measured_amplitudes, dse_lambda, weights, noise_model)
  if name == "mse":
    return mse_loss(patches["amplitude"], patches["phase"],
                    true_patches["amplitude"], true_patches["phase"], weights)
  if name == "dse":
    return dse_loss(patches["amplitude"], patches["phase"],
                    true_patches["amplitude"], true_patches["phase"], probe,
                    measured_amplitudes, dse_lambda, weights)
  raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
