"""Training pairs of the error plug-and-play leaves: (prior input, truth) images.

A denoiser trained on white noise sees, inside plug-and-play, another noise:
what the LSQML data steps leave of low-dose shot noise is correlated (excess
power at low frequencies, most of all in the phase). `record_pnp_states`
runs plug-and-play on simulated scans whose objects are known and keeps, at
every prior step, the object the prior is given; `scaled_pairs` turns each
into the prior's units exactly as `objects.denoise_images` does (mean 0.5 and
standard deviation TARGET_STD on the lit region, both from the estimate),
with the truth (its constant phase offset aligned to the estimate's) mapped
by the same affine map: a pair (input, target) and the noise level the
schedule gave that step. `prior.data.PairSource` cuts training patches from
them. The scans must come from images that may be redistributed (the
embedded and procedural ones) when the prior is to ship.
"""
import numpy as np

from ptychonet_tf.baselines import pnp
from ptychonet_tf.prior import objects as prior_objects


class RecordingPnP(pnp.PnP):
  """Plug-and-play that keeps each prior step's input (complex64 [B, H, W])
  and noise level in `states`, a list of (objects, sigma)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.states = []

  def prior_step(self, obj, sigma):
    self.states.append((np.asarray(obj, np.complex64), float(sigma)))
    return super().prior_step(obj, sigma)


def record_pnp_states(amplitudes, probe, layout, object_shape, config):
  """The objects each prior step of a plug-and-play run is given.

  Args:
    amplitudes: float32 [B, N, h, w].
    probe: complex [h, w] (known).
    layout: int [N, 4].
    object_shape: (H, W).
    config: pnp.PnPConfig.

  Returns:
    list of (complex64 [B, H, W], sigma float), one per round.
  """
  solver = RecordingPnP(amplitudes, probe, layout, object_shape, config)
  solver.run()
  return solver.states


def lit_box(lit):
  """(top, bottom, left, right) of the largest centred box inside `lit`
  (bool [H, W]): rows and columns whose central span is all lit."""
  lit = np.asarray(lit, bool)
  h, w = lit.shape
  for margin in range(min(h, w) // 2):
    box = lit[margin:h - margin, margin:w - margin]
    if box.all():
      return margin, h - margin, margin, w - margin
  raise ValueError("the lit region holds no box")


def scaled_pairs(estimates, truths, lit, domain="complex"):
  """Estimates and truths as the prior sees them, on the lit box.

  Args:
    estimates: complex [S, H, W], the prior's inputs.
    truths: complex [S, H, W].
    lit: bool [H, W], the region the prior acts on.
    domain: "complex" (real and imaginary parts) or "amplitude_phase".

  Returns:
    (inputs, targets) float32 [2 S, h, w] (the first image of each object
    first, then the second ones), cropped to `lit_box(lit)`.
  """
  estimates = np.asarray(estimates, np.complex128)
  truths = np.asarray(truths, np.complex128)
  # The constant phase offset is not determined by the data: align the truth.
  inner = np.sum(np.conj(truths) * estimates * lit, axis=(1, 2))
  truths = truths * np.exp(1j * np.angle(inner))[:, None, None]
  if domain == "complex":
    parts = [(estimates.real, truths.real), (estimates.imag, truths.imag)]
  elif domain == "amplitude_phase":
    parts = [(np.abs(estimates), np.abs(truths)),
             (np.angle(estimates), np.angle(truths))]
  else:
    raise ValueError(f"domain {domain!r} is not one of {prior_objects.DOMAINS}")
  top, bottom, left, right = lit_box(lit)
  count = lit.sum()
  inputs, targets = [], []
  for x, t in parts:
    mean = np.sum(x * lit, axis=(1, 2), keepdims=True) / count
    std = np.sqrt(np.sum((x - mean) ** 2 * lit, axis=(1, 2),
                         keepdims=True) / count)
    scale = (std + 1e-6) / prior_objects.TARGET_STD
    inputs.append((0.5 + (x - mean) / scale)[:, top:bottom, left:right])
    targets.append((0.5 + (t - mean) / scale)[:, top:bottom, left:right])
  return (np.concatenate(inputs).astype(np.float32),
          np.concatenate(targets).astype(np.float32))
