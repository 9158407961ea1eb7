"""Illumination probes: simulated focused probes and probes loaded from files.

A probe is a complex64 numpy array [h, w]. Its amplitude is normalised so that
its largest value is 1, which keeps diffraction amplitudes of objects with
amplitude <= 1 in a predictable range.
"""
import os

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

PROBE_KINDS = ("zone_plate", "pinhole")


def _centered_grid(shape):
  """Returns (y, x) pixel offsets from the array centre, each [h, w] float64."""
  h, w = shape
  y = np.arange(h) - h // 2
  x = np.arange(w) - w // 2
  return np.meshgrid(y, x, indexing="ij")


def _soft_disk(r, radius, edge):
  """A disk of the given radius with a raised-cosine edge `edge` pixels wide."""
  t = np.clip((r - radius) / max(edge, 1e-6) + 0.5, 0.0, 1.0)
  return 0.5 * (1.0 + np.cos(np.pi * t))


def zone_plate_probe(shape, diameter=0.5, pupil=0.3, central_stop=0.3):
  """A defocused zone-plate probe, as in a scanning X-ray microscope.

  The pupil (zone plate) is an annulus in the Fourier plane with a quadratic
  (defocus) phase; its inverse DFT gives the probe in the sample plane: a
  bright disk of `diameter` * min(h, w) pixels with Fresnel fringes and a
  curved phase, near zero outside.

  Args:
    shape: (h, w) of the probe in pixels.
    diameter: geometric diameter of the illuminated disk as a fraction of
      min(h, w).
    pupil: radius of the zone plate in the Fourier plane as a fraction of
      min(h, w) (must stay below 0.5, the Nyquist limit).
    central_stop: radius of the central stop as a fraction of the pupil.

  Returns:
    complex64 [h, w], max amplitude 1.
  """
  h, w = shape
  n = min(h, w)
  fy, fx = _centered_grid(shape)
  rho = np.hypot(fy * n / h, fx * n / w)
  radius_f = pupil * n
  # Quadratic phase pi*a*(rho/R)^2 sends the pupil edge to a sample-plane
  # radius of n*a/R pixels; choose a for the requested disk diameter.
  a = diameter * radius_f / 2.0
  aperture = _soft_disk(rho, radius_f, 2.0)
  aperture *= 1.0 - _soft_disk(rho, central_stop * radius_f, 2.0)
  field = aperture * np.exp(1j * np.pi * a * (rho / radius_f) ** 2)
  probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(field)))
  return _normalise(probe)


def pinhole_probe(shape, diameter=0.5, curvature=6.0):
  """A pinhole-defined probe: a soft-edged disk with a curved (diverging) phase.

  Args:
    shape: (h, w) in pixels.
    diameter: disk diameter as a fraction of min(h, w).
    curvature: phase at the disk edge in radians (quadratic profile).

  Returns:
    complex64 [h, w], max amplitude 1.
  """
  n = min(shape)
  y, x = _centered_grid(shape)
  r = np.hypot(y, x)
  radius = diameter * n / 2.0
  probe = _soft_disk(r, radius, max(2.0, 0.1 * radius)) * np.exp(
      1j * curvature * (r / radius) ** 2)
  return _normalise(probe)


def _normalise(probe):
  probe = np.asarray(probe, np.complex128)
  return (probe / np.abs(probe).max()).astype(np.complex64)


def make_probe(shape, kind="zone_plate", diameter=0.5):
  """Builds a simulated probe of the given kind ("zone_plate" or "pinhole")."""
  h, w = (int(s) for s in shape)
  if h < 4 or w < 4:
    raise UserError(f"probe size {h}x{w} is too small; expected at least 4x4")
  if not 0.0 < diameter <= 1.0:
    raise UserError(f"probe diameter {diameter} must be in (0, 1]")
  if kind == "zone_plate":
    return zone_plate_probe((h, w), diameter=diameter)
  if kind == "pinhole":
    return pinhole_probe((h, w), diameter=diameter)
  raise UserError(f"unknown probe kind {kind!r}; expected one of {PROBE_KINDS}")


def rms_frame(probe):
  """(y, x, rms): a probe's pixel offsets from its centre of intensity
  (float64 [h, w] each) and its RMS radius in pixels."""
  probe = np.asarray(probe)
  power = np.abs(probe.astype(np.complex128)) ** 2
  y, x = np.mgrid[:probe.shape[0], :probe.shape[1]].astype(np.float64)
  y -= np.sum(power * y) / power.sum()
  x -= np.sum(power * x) / power.sum()
  return y, x, float(np.sqrt(np.sum(power * (y ** 2 + x ** 2)) / power.sum()))


def aberrate(probe, defocus=0.0, astigmatism=(0.0, 0.0), coma=(0.0, 0.0)):
  """A probe times the phase of low-order aberrations, each in radians at
  its RMS radius (`rms_frame`): defocus r^2, astigmatism (y^2 - x^2, 2xy)
  and coma ((3 r^2 - 2) y, (3 r^2 - 2) x), the Zernike shapes.

  Returns complex64 [h, w], the probe's amplitude unchanged.
  """
  y, x, rms = rms_frame(probe)
  y, x = y / rms, x / rms
  r2 = y ** 2 + x ** 2
  phase = (defocus * r2 + astigmatism[0] * (y ** 2 - x ** 2) +
           astigmatism[1] * 2 * y * x + (3 * r2 - 2) * (coma[0] * y +
                                                        coma[1] * x))
  return (np.asarray(probe) * np.exp(1j * phase)).astype(np.complex64)


def load_probe(path, expected_shape=None):
  """Loads a complex probe [h, w] from a .npy file or an .npz file.

  An .npz file must hold a key ``probe`` or exactly one array.

  Raises:
    UserError: the file is missing or unreadable, holds no 2-D array, or its
      shape differs from `expected_shape`.
  """
  if not os.path.isfile(path):
    raise UserError(f"probe file {path} does not exist")
  loaded = files.load_arrays(path, f"probe file {path}", allow_npy=True)
  if isinstance(loaded, np.lib.npyio.NpzFile):
    with loaded:
      keys = list(loaded.keys())
      if "probe" in keys:
        probe = loaded["probe"]
      elif len(keys) == 1:
        probe = loaded[keys[0]]
      else:
        raise UserError(f"probe file {path} holds {keys}; expected a key 'probe'")
  else:
    probe = loaded
  if probe.ndim != 2:
    raise UserError(
        f"probe in {path} has shape {probe.shape}; expected a 2-D array [h, w]")
  if expected_shape is not None and tuple(probe.shape) != tuple(expected_shape):
    raise UserError(
        f"probe in {path} has shape {tuple(probe.shape)}; expected "
        f"{tuple(expected_shape)} (the probe size of this geometry)")
  if not np.all(np.isfinite(probe)):
    raise UserError(f"probe in {path} holds NaN or infinite values")
  return probe.astype(np.complex64)
