"""A far-field scan on a coarser object grid: cropped patterns, resampled probe.

Keeping the central h x w of 2h x 2w detector patterns (a smaller detector,
the same distance) is the same experiment with twice the object pixel size:
the exit wave's spectrum outside the crop is dropped, and what remains is
the spectrum of the band-limited exit wave sampled at every other object
pixel. So a model of h x w patterns reconstructs a 2h x 2w scan from its
cropped patterns, with positions divided by the factor and the probe
resampled the same way: its spectrum cropped to h x w, back to real space.

Conventions (`physics.forward`): detector patterns have zero frequency at
(h//2, w//2) (fftshift), the far field is the unitary centred DFT, so
A^2 = |DFT(P * O_j)|^2 / (h * w). With a unitary DFT on both grids the crop
keeps the amplitudes as they are, and the resampled probe is
P_c = F_c^-1(crop(F(P))), whose energy sum |P_c|^2 is the spectrum's
energy inside the crop (Parseval): the cropped patterns' energy, so a
unit-amplitude object still explains the measured power. The relation is
exact for a band-limited exit wave inside each window; a probe whose
spectrum leaks out of the crop, or an object with detail finer than the
coarse pixel, leaves what the crop drops.
"""
import numpy as np


def crop_factor(pattern_shape, target_shape):
  """The integer factor between a scan's pattern size and a smaller one.

  Args:
    pattern_shape: (H, W) of the scan's patterns.
    target_shape: (h, w), e.g. a model's pattern size.

  Returns:
    int f >= 1 with H = f * h and W = f * w.

  Raises:
    ValueError: the sizes are not one integer multiple of each other.
  """
  (big_h, big_w), (h, w) = (tuple(int(s) for s in pattern_shape),
                            tuple(int(s) for s in target_shape))
  if h <= 0 or w <= 0 or big_h % h or big_w % w or big_h // h != big_w // w:
    raise ValueError(f"patterns of {big_h}x{big_w} are not an integer "
                     f"multiple f >= 1 of {h}x{w} in both axes")
  return big_h // h


def _centre(size, keep):
  """The slice of `keep` entries around index size//2 (detector zero
  frequency) that puts it at keep//2."""
  start = size // 2 - keep // 2
  return slice(start, start + keep)


def crop_patterns(amplitudes, shape):
  """The central h x w of detector-convention patterns.

  Args:
    amplitudes: real [..., H, W], zero frequency at (H//2, W//2).
    shape: (h, w), at most (H, W).

  Returns:
    [..., h, w] (a copy, the input's dtype), zero frequency at (h//2, w//2).
  """
  amplitudes = np.asarray(amplitudes)
  big_h, big_w = amplitudes.shape[-2:]
  h, w = (int(s) for s in shape)
  if not (0 < h <= big_h and 0 < w <= big_w):
    raise ValueError(f"cannot crop {big_h}x{big_w} patterns to {h}x{w}")
  return amplitudes[..., _centre(big_h, h), _centre(big_w, w)].copy()


def resample_probe(probe, shape):
  """A probe on the coarser grid whose far field is the crop of its own.

  P_c = ifft_c(crop(fft(P))) with unitary DFTs on both grids, so
  |F_c(P_c)| is the central h x w of |F(P)| and sum |P_c|^2 is the energy
  of the probe's spectrum inside the crop. For a factor f the coarse probe
  is f times the band-limited probe sampled at every f-th pixel.

  Args:
    probe: complex [H, W].
    shape: (h, w), at most (H, W).

  Returns:
    complex64 [h, w].
  """
  probe = np.asarray(probe, np.complex128)
  big_h, big_w = probe.shape
  h, w = (int(s) for s in shape)
  # The far field of physics.forward (window pixel 0 at the origin), cropped,
  # and its inverse on the h x w grid: coarse pixel m is fine pixel f * m.
  spectrum = np.fft.fftshift(np.fft.fft2(probe)) / np.sqrt(big_h * big_w)
  cropped = crop_patterns(spectrum, (h, w))
  coarse = np.fft.ifft2(np.fft.ifftshift(cropped)) * np.sqrt(h * w)
  return coarse.astype(np.complex64)


def coarse_positions(positions, factor):
  """Probe positions (pixels, any origin) in pixels of the coarser grid."""
  return np.asarray(positions, np.float64) / float(factor)
