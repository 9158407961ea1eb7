"""Dose sweeps: methods on Poisson-noisy copies of noise-free test scans.

At each dose (mean photons per diffraction pattern over a scan,
`physics.forward.poisson_amplitudes`; inf = noise free) every test scan's
amplitudes are redrawn with shot noise, the same draw for every method, and
scaled back to noise-free units, so a model trained on noise-free data sees
inputs of the scale it knows.
"""
import math

import numpy as np

from ptychonet_tf.physics import forward
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError

NOISE_FREE = math.inf


def parse_doses(values):
  """Photon doses from strings ("1e4", "inf"; "0" also means noise free).

  Returns floats in the given order, noise free as `NOISE_FREE`; raises
  UserError naming a value that is not a number or is negative.
  """
  doses = []
  for value in values:
    try:
      dose = float(value)
    except (TypeError, ValueError):
      raise UserError(f"--photons value {value!r} is not a number (photons "
                      f"per pattern, or inf for noise free)") from None
    if math.isnan(dose) or dose < 0:
      raise UserError(f"--photons value {value!r} must be >= 0 (0 or inf = "
                      f"noise free)")
    doses.append(NOISE_FREE if dose == 0 else dose)
  if len(set(doses)) < len(doses):
    raise UserError(f"--photons repeats a dose: {','.join(values)}")
  return limits.check_photons(doses)


def label(dose):
  """"1e+04" style text of a dose; "noise free" for NOISE_FREE."""
  return "noise free" if math.isinf(dose) else f"{dose:g}"


def noisy_scans(amplitudes, dose, seed=0):
  """float32 [S, N, h, w]: each scan with shot noise at `dose` photons per
  pattern (its own seed, (seed, scan index)); a copy at NOISE_FREE."""
  amplitudes = np.asarray(amplitudes, np.float32)
  if math.isinf(dose):
    return amplitudes.copy()
  return np.stack([forward.poisson_amplitudes(scan, dose, [seed, i])
                   for i, scan in enumerate(amplitudes)])


def sweep(amplitudes, doses, methods, score, seed=0, progress=None):
  """Scores of every method at every dose.

  Args:
    amplitudes: float32 [S, N, h, w] noise-free test amplitudes.
    doses: floats (`parse_doses`).
    methods: list of (name, reconstruct): reconstruct(noisy amplitudes,
      earlier) -> (objects complex64 [S, H, W], seconds per scan), where
      earlier maps the names of the methods before it to their (objects,
      seconds) at this dose (e.g. for DM started from a learned model).
    score: objects -> per-scan metric dicts (`comparison.score`).
    seed: noise seed; the same draw for every method.
    progress: optional callable(text) told each (dose, method) as it starts.

  Returns:
    list of dicts {"photons", "method", "seconds", "scores"}, in dose order,
    then method order.
  """
  rows = []
  for dose in doses:
    noisy = noisy_scans(amplitudes, dose, seed)
    earlier = {}
    for name, reconstruct in methods:
      if progress is not None:
        progress(f"{label(dose)}{'' if math.isinf(dose) else ' photons'}: "
                 f"{name}")
      objects, seconds = reconstruct(noisy, earlier)
      earlier[name] = (objects, seconds)
      rows.append({"photons": dose, "method": name, "seconds": seconds,
                   "scores": score(objects)})
  return rows
