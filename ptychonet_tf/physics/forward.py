"""The far-field ptychography forward model and the extract <-> stitch operator pair.

Conventions (used everywhere in the package):

- Objects are complex64 [..., H, W]; probes complex64 [h, w]; layouts int32
  [N, 4] rows (top, bottom, left, right), see `physics.layouts`.
- `extract` gathers the N probe windows of an object: [..., H, W] ->
  [..., N, h, w]. `stitch` is its exact adjoint: it sums N windows back into
  an [..., H, W] canvas, so that <extract(x), y> = <x, stitch(y)>. Both are
  one-line wrappers over `physics.windows.Windows`, the one implementation;
  code that extracts or stitches repeatedly builds a `Windows` once.
- `far_field` is the unitary centred DFT: fftshift(fft2(psi)) / sqrt(h*w) over
  the last two axes, with zero frequency at index (h//2, w//2), as a detector
  records it. Parseval holds: sum|far_field(psi)|^2 = sum|psi|^2.
- Diffraction amplitudes are A_j = |far_field(P * O[t:b, l:r])|, so that
  A_j^2 = |DFT(P * O_j)|^2 / (h*w), the intensities I_j of the paper.
"""
import numpy as np
import tensorflow as tf

from ptychonet_tf.physics import windows


def extract(obj, layout, probe_shape):
  """Gathers the probe windows of objects (`windows.Windows.extract`).

  Args:
    obj: [..., H, W] any dtype (real or complex), static H, W.
    layout: int [N, 4], every window inside the object.
    probe_shape: (h, w).

  Returns:
    [..., N, h, w], the dtype of obj.
  """
  obj = tf.convert_to_tensor(obj)
  return windows.Windows(layout, obj.shape[-2:], probe_shape).extract(obj)


def stitch(patches, layout, object_shape):
  """Sums windows into object canvases, the adjoint of `extract`.

  `windows.Windows.stitch` with its default method.

  Args:
    patches: [..., N, h, w] real or complex, static N, h, w.
    layout: int [N, 4].
    object_shape: (H, W).

  Returns:
    [..., H, W], the sum over windows covering each pixel (0 where none do).
  """
  patches = tf.convert_to_tensor(patches)
  return windows.Windows(layout, object_shape, patches.shape[-2:]).stitch(
      patches)


def overlap_count(layout, object_shape, probe_shape):
  """float32 tensor [H, W]: how many windows cover each pixel.

  `windows.Windows.coverage` as a tensor.
  """
  return tf.constant(windows.Windows(layout, object_shape,
                                     probe_shape).coverage(), tf.float32)


# Below this |z|^2 a magnitude counts as 0 and its gradient as 0.
_TINY = 1e-20


def magnitude(z):
  """|z| for complex z with a finite gradient everywhere (0 at z = 0).

  The gradient of |z| is z/|z|, undefined at z = 0 (sqrt(re^2 + im^2) gives
  NaN there; tf.abs happens to guard it in current TF). Here the square root
  only sees |z|^2 where it is above 1e-20 (the double-where trick), so the
  value and gradient are exact elsewhere and the gradient is 0 at z = 0,
  independently of how TF implements the gradient of ComplexAbs. The
  Fourier update of the solvers, the DFT loss and the model's refinement
  steps all take moduli through it.
  """
  z = tf.convert_to_tensor(z)
  power = tf.math.square(tf.math.real(z)) + tf.math.square(tf.math.imag(z))
  nonzero = power > _TINY
  return tf.where(nonzero, tf.sqrt(tf.where(nonzero, power, 1.0)), 0.0)


def phase(z):
  """angle(z) with a finite gradient everywhere (0, and gradient 0, at z = 0).

  The companion of `magnitude`: the gradient of angle(z) is undefined at
  z = 0 (e.g. unscanned pixels of an object), so z is replaced by 1 there
  before the angle is taken (the double-where trick).
  """
  z = tf.convert_to_tensor(z)
  power = tf.math.square(tf.math.real(z)) + tf.math.square(tf.math.imag(z))
  nonzero = power > _TINY
  return tf.where(nonzero, tf.math.angle(tf.where(nonzero, z, tf.ones_like(z))),
                  0.0)


def real_to_complex(x):
  """float32 x as complex64 x + 0i, differentiable: its gradient is the real
  part of the incoming one (tf.cast's is too, but it warns that it drops
  the imaginary part every time a gradient is traced)."""
  x = tf.convert_to_tensor(x, tf.float32)
  return tf.complex(x, tf.zeros_like(x))


def far_field(psi):
  """Unitary centred 2-D DFT over the last two axes (complex64 in and out)."""
  psi = tf.convert_to_tensor(psi, tf.complex64)
  h, w = psi.shape[-2], psi.shape[-1]
  scale = tf.cast(1.0 / np.sqrt(h * w), tf.complex64)
  return tf.signal.fftshift(tf.signal.fft2d(psi), axes=(-2, -1)) * scale


def inverse_far_field(spectrum):
  """Inverse of `far_field`: ifft2(ifftshift(spectrum)) * sqrt(h*w)."""
  spectrum = tf.convert_to_tensor(spectrum, tf.complex64)
  h, w = spectrum.shape[-2], spectrum.shape[-1]
  scale = tf.cast(np.sqrt(h * w), tf.complex64)
  return tf.signal.ifft2d(tf.signal.ifftshift(spectrum, axes=(-2, -1))) * scale


def exit_waves(obj, probe, layout):
  """P * O[t:b, l:r] for every window: complex64 [..., N, h, w]."""
  probe = tf.convert_to_tensor(probe, tf.complex64)
  obj = tf.convert_to_tensor(obj, tf.complex64)
  return probe * extract(obj, layout, probe.shape)


def diffraction_amplitudes(obj, probe, layout):
  """Noise-free amplitudes A_j = |far_field(P * O_j)|: float32 [..., N, h, w].

  Args:
    obj: complex64 [..., H, W].
    probe: complex64 [h, w].
    layout: int [N, 4], every window inside the object.
  """
  return tf.abs(far_field(exit_waves(obj, probe, layout)))


def poisson_amplitudes(amplitudes, photons, seed):
  """Amplitudes with Poisson (shot) noise at a given photon budget.

  Intensities are scaled so that a diffraction pattern holds `photons` counts
  on average over the scan, sampled from a Poisson distribution, and scaled
  back, so the result stays in the units of the input.

  Args:
    amplitudes: float32 [..., N, h, w] noise-free amplitudes.
    photons: mean photon count per pattern (> 0).
    seed: int seed (numpy generator), for reproducible noise.

  Returns:
    float32 numpy array, same shape.
  """
  intensity = np.square(np.asarray(amplitudes, np.float64))
  mean_total = intensity.sum(axis=(-2, -1)).mean()
  if mean_total <= 0:
    return np.zeros_like(intensity, np.float32)
  scale = photons / mean_total
  counts = np.random.default_rng(seed).poisson(intensity * scale)
  return np.sqrt(counts / scale).astype(np.float32)
