"""The ptychography operator: the physics that every solver and the unrolled refinement call.

`Ptychography` is built once per (layout, object shape, probe shape,
position grouping). It owns the probe windows (`physics.windows.Windows`) and
the FFT frame, and offers the pieces a reconstruction is made of: exit
waves, their spectra, the modulus projection (Gaussian and Poisson
likelihoods), the illumination sum_j |P|^2, the preconditioned object and
probe solutions, and the data misfit. DM, ePIE, LSQML
(`baselines/`) and the learned refinement (`model/refinement.py`) only call
these methods; none of them builds an FFT or a window sum itself.

Notation: object O complex64 [B, H, W], probe P complex64 [B, h, w] (or
[h, w], broadcast over the batch), exit waves psi_j = P O_j complex64
[B, K, h, w] for the K positions of a group, O_j the j-th window
O[top:bottom, left:right].

FFT frame. Measured amplitudes come in the detector convention of
`physics.forward` (zero frequency at (h//2, w//2), unitary DFT). The
operator works in the unshifted, unnormalised frame instead: `loop_amplitudes`
ifftshifts the amplitudes and scales them by sqrt(h*w) once, and
`propagate` / `backpropagate` are plain fft2d / ifft2d, so |propagate(psi)|
compares with the loop amplitudes directly and no step pays for an fftshift
(which costs about as much as the FFT on CPU). The modulus projection is
pointwise and holds in either frame.

Position groups. The positions are split into groups given at construction
(default: one group holding all positions in layout order). Inside, the
positions are kept in group order: group k is the slice `bounds[k]` of the
order `order`, and `loop_amplitudes` reorders the patterns the same way.
Every method takes `group` = k for one group's windows, or None for all
positions (in group order).
"""
import numpy as np
import tensorflow as tf

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import windows as windows_lib

NOISE_MODELS = ("gaussian", "poisson")
# The Poisson ratio r = 1 - A^2 / |Psi|^2 is clipped below at -POISSON_CLIP:
# where the model is nearly dark but the data are not, r is huge, and those
# pixels would dominate the pattern's Newton step (a flat start stalls).
POISSON_CLIP = 10.0
# |Psi|^2 below which the Poisson ratio's denominator stops falling (its
# gradient, 1 / |Psi|^4, stays within float32).
_POWER_FLOOR = 1e-20


def with_inertia(numerator, norm, previous, inertia):
  """(numerator + e * previous) / (norm + e), e = inertia * max(norm).

  The regularised division of the object and probe solutions; previous None
  counts as 0. The max is per leading index, over the last two axes.

  Args:
    numerator: complex64 [..., a, b].
    norm: float32 [..., a, b], >= 0.
    previous: None or complex64 [..., a, b].
    inertia: relative weight e / max(norm) (> 0).

  Returns:
    complex64 [..., a, b].
  """
  eps = inertia * tf.reduce_max(norm, axis=(-2, -1), keepdims=True)
  if previous is not None:
    numerator += forward.real_to_complex(eps) * tf.convert_to_tensor(
        previous, tf.complex64)
  return numerator / forward.real_to_complex(norm + eps)


def modulus_projection(spectra, amplitudes, pbound=None):
  """Replaces the moduli of spectra by the measured amplitudes (Pi_F).

  Pointwise: spectra * target / |spectra|, with target = A (the exact
  projection) or, with a power bound, A + (|spectra| - A) * r per pattern,
  r = sqrt(min(1, pbound / mean((|spectra| - A)^2))): a pattern whose mean
  squared misfit is within the bound stays, a worse one moves only down to
  the bound (ptypy's fourier_relax_factor). Where a spectrum is exactly 0 it
  stays 0. Holds in any FFT frame, given amplitudes in the frame of spectra.

  Args:
    spectra: complex64 [..., h, w].
    amplitudes: float32 [..., h, w], the frame of `spectra`.
    pbound: None (exact projection) or float32 power bound per pattern,
      broadcastable to [...] (e.g. [B, 1] for spectra [B, N, h, w]), in the
      units of the mean of amplitudes^2.

  Returns:
    complex64 [..., h, w].
  """
  spectra = tf.convert_to_tensor(spectra, tf.complex64)
  amplitudes = tf.cast(amplitudes, tf.float32)
  magnitude = forward.magnitude(spectra)
  if pbound is None:
    target = amplitudes
  else:
    deviation = magnitude - amplitudes
    misfit = tf.reduce_mean(deviation ** 2, axis=(-2, -1))
    renorm = tf.sqrt(tf.minimum(1.0, tf.math.divide_no_nan(pbound, misfit)))
    target = amplitudes + deviation * renorm[..., None, None]
  ratio = tf.math.divide_no_nan(target, magnitude)
  return spectra * forward.real_to_complex(ratio)


def _real_dot(a, b):
  """sum Re(conj(a) b) over the last two axes: float32 [...]."""
  return tf.reduce_sum(tf.math.real(tf.math.conj(a) * b), axis=(-2, -1))


def step_lengths(chi, object_term, probe_term=None, step_reg=1e-3,
                 max_step=10.0):
  """The batch's step lengths from the per-position least-squares problems.

  Per position j, (a_O,j, a_P,j) minimise ||chi_j - a_O u_j - a_P v_j||^2
  with u_j = P dO_j and v_j = dP O_j: the 2x2 normal equations, their
  diagonal loaded by step_reg times its mean over the batch (a_O,j alone
  without a probe term). Each is clipped to [0, max_step]; the batch's step
  is their mean over its K positions.

  Args:
    chi: complex64 [B, K, h, w].
    object_term: complex64 [B, K, h, w] u_j.
    probe_term: None or complex64 [B, K, h, w] v_j.
    step_reg: relative diagonal loading (>= 0).
    max_step: upper clip.

  Returns:
    (a_O, a_P): float32 [B] each; a_P is None without a probe term.
  """
  a11 = _real_dot(object_term, object_term)
  b1 = _real_dot(object_term, chi)
  a11 = a11 + step_reg * tf.reduce_mean(a11, axis=-1, keepdims=True)
  if probe_term is None:
    alpha = tf.math.divide_no_nan(b1, a11)
    return tf.reduce_mean(tf.clip_by_value(alpha, 0.0, max_step), -1), None
  a22 = _real_dot(probe_term, probe_term)
  a12 = _real_dot(object_term, probe_term)
  b2 = _real_dot(probe_term, chi)
  a22 = a22 + step_reg * tf.reduce_mean(a22, axis=-1, keepdims=True)
  det = a11 * a22 - a12 ** 2
  alpha_o = tf.math.divide_no_nan(a22 * b1 - a12 * b2, det)
  alpha_p = tf.math.divide_no_nan(a11 * b2 - a12 * b1, det)
  return (tf.reduce_mean(tf.clip_by_value(alpha_o, 0.0, max_step), -1),
          tf.reduce_mean(tf.clip_by_value(alpha_p, 0.0, max_step), -1))


def _batched(probe):
  """probe [..., h, w] as [..., 1, h, w], to multiply windows [..., K, h, w]."""
  return tf.expand_dims(tf.convert_to_tensor(probe, tf.complex64), -3)


class Ptychography:
  """Far-field ptychography of one layout in one object, in the loop's frame.

  Args:
    layout: int [N, 4] rows (top, bottom, left, right).
    object_shape: (H, W).
    probe_shape: (h, w).
    groups: None (one group: all positions in layout order) or a list of
      int arrays of position indices that together are a permutation of
      range(N).

  Attributes:
    layout: int32 numpy [N, 4] in layout order.
    object_shape, probe_shape: (H, W), (h, w).
    count: N.
    groups: list of int numpy arrays, the positions of each group.
    order: int numpy [N], the groups' positions one after another.
    bounds: list of (start, stop): group k is order[start:stop].
    windows: `Windows` of all positions, in group order.
    group_windows: list of `Windows`, one per group.
  """

  def __init__(self, layout, object_shape, probe_shape, groups=None):
    layout = np.asarray(layout, np.int32)
    self.layout = layout
    self.object_shape = tuple(int(s) for s in object_shape)
    self.probe_shape = tuple(int(s) for s in probe_shape)
    self.count = len(layout)
    if groups is None:
      groups = [np.arange(self.count)]
    self.groups = [np.asarray(g, np.int64) for g in groups]
    self.order = np.concatenate(self.groups)
    if sorted(self.order.tolist()) != list(range(self.count)):
      raise ValueError(f"position groups are not a partition of the "
                       f"{self.count} positions")
    sizes = np.cumsum([0] + [len(g) for g in self.groups])
    self.bounds = [(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:])]
    self.windows = windows_lib.Windows(layout[self.order], self.object_shape,
                                       self.probe_shape)
    if len(self.groups) == 1:
      self.group_windows = [self.windows]
    else:
      self.group_windows = [
          windows_lib.Windows(layout[g], self.object_shape, self.probe_shape)
          for g in self.groups]
    self._covered = None

  @classmethod
  def of_scan(cls, corners, object_shape, probe_shape, groups=1):
    """The operator of a scan given as tensors (inside a graph).

    The same methods, for a scan whose positions and object size are known
    only when a graph runs (a SavedModel's `any_scan` signature):
    `Windows.of_corners` windows and `groups` interleaved position groups
    (`layouts.interleaved_groups`), their order and bounds as tensors.

    Args:
      corners: int32 [N, 2] tensor, the windows' (top, left), inside the
        object; N >= groups.
      object_shape: int32 [2] tensor (H, W).
      probe_shape: (h, w), static.
      groups: the number of interleaved position groups (static).
    """
    self = cls.__new__(cls)
    corners = tf.cast(corners, tf.int32)
    self.layout = None
    self.object_shape = tf.cast(object_shape, tf.int32)
    self.probe_shape = tuple(int(s) for s in probe_shape)
    self.count = tf.shape(corners)[0]
    members = [tf.range(g, self.count, groups) for g in range(int(groups))]
    self.groups = members
    self.order = tf.concat(members, 0)
    sizes = tf.stack([tf.size(m) for m in members])
    starts = tf.math.cumsum(sizes, exclusive=True)
    self.bounds = [(starts[g], starts[g] + sizes[g])
                   for g in range(int(groups))]
    self.windows = windows_lib.Windows.of_corners(
        tf.gather(corners, self.order), self.object_shape, self.probe_shape)
    self.group_windows = (
        [self.windows] if groups == 1 else
        [windows_lib.Windows.of_corners(tf.gather(corners, m),
                                        self.object_shape, self.probe_shape)
         for m in members])
    self._covered = None
    return self

  # --- Frame -----------------------------------------------------------------

  @property
  def fft_scale(self):
    """sqrt(h*w): loop-frame amplitudes are detector amplitudes times this."""
    return np.float32(np.sqrt(self.probe_shape[0] * self.probe_shape[1]))

  def loop_amplitudes(self, amplitudes):
    """Detector amplitudes -> the loop's frame and group order (numpy).

    Args:
      amplitudes: float [..., N, h, w], layout order, detector convention.

    Returns:
      float32 numpy [..., N, h, w]: ifftshift(A) * sqrt(h*w), positions in
      `order`, so that |propagate(psi)| compares with them directly.
    """
    amplitudes = np.asarray(amplitudes)[..., self.order, :, :]
    return (np.fft.ifftshift(amplitudes, axes=(-2, -1)) *
            self.fft_scale).astype(np.float32)

  def loop_amplitudes_tensor(self, amplitudes):
    """`loop_amplitudes` inside a graph: float32 [..., N, h, w] tensor."""
    amplitudes = tf.cast(amplitudes, tf.float32)
    if tf.is_tensor(self.order) or not np.array_equal(
        self.order, np.arange(self.count)):
      amplitudes = tf.gather(amplitudes, self.order, axis=-3)
    return tf.signal.ifftshift(amplitudes, axes=(-2, -1)) * self.fft_scale

  def group_slice(self, values, group):
    """values [..., N, ...] in group order -> the K of `group` (None: all)."""
    if group is None:
      return values
    start, stop = self.bounds[group]
    return values[..., start:stop, :, :]

  def covered(self):
    """float32 numpy [H, W]: 1 where a window covers the pixel, else 0."""
    if self._covered is None:
      self._covered = (self.windows.coverage() > 0).astype(np.float32)
    return self._covered

  # --- Forward model ----------------------------------------------------------

  def windows_of(self, group=None):
    """The `Windows` of a group (None: all positions, in group order)."""
    return self.windows if group is None else self.group_windows[group]

  def views(self, obj, group=None):
    """The object windows O_j: [..., H, W] -> [..., K, h, w]."""
    return self.windows_of(group).extract(obj)

  @staticmethod
  def propagate(waves):
    """Exit waves -> spectra: plain fft2d over the last two axes."""
    return tf.signal.fft2d(waves)

  @staticmethod
  def backpropagate(spectra):
    """Spectra -> exit waves: plain ifft2d, the inverse of `propagate`."""
    return tf.signal.ifft2d(spectra)

  def exit_waves(self, obj, probe, group=None):
    """psi_j = P O_j: complex64 [B, K, h, w] (probe [B, h, w] or [h, w])."""
    return _batched(probe) * self.views(obj, group)

  def spectra(self, obj, probe, group=None):
    """F(P O_j): complex64 [B, K, h, w], the loop's frame."""
    return self.propagate(self.exit_waves(obj, probe, group))

  # --- Data terms -------------------------------------------------------------

  @staticmethod
  def misfit(spectra, amplitudes):
    """sum_j || |F psi_j| - A_j ||^2 per scan: float32 [B] (loop frame)."""
    return tf.reduce_sum((tf.abs(spectra) - amplitudes) ** 2, axis=(-3, -2, -1))

  @staticmethod
  def modulus_projection(spectra, amplitudes, pbound=None):
    """Pi_F of spectra (see the module function `modulus_projection`)."""
    return modulus_projection(spectra, amplitudes, pbound)

  def difference_map_update(self, obj, waves_hat, probe, amplitudes,
                            alpha=1.0, group=None, pbound=None):
    """The difference map's change of the exit waves from the new object.

    With phi = F(P O_j) of the object just projected from the exit waves and
    psi their spectra: Delta = Pi_F((1 + alpha) phi - alpha psi) - phi, so
    that psi + Delta is DM's next iterate (alpha = 1: the classic map).

    Args:
      obj: complex64 [B, H, W] the overlap projection of the exit waves.
      waves_hat: complex64 [B, K, h, w] the exit waves' spectra (loop frame).
      probe: complex64 [h, w] or [B, h, w].
      amplitudes: float32 [B, K, h, w] (loop frame).
      alpha: DM's relaxation.
      group: the positions of waves_hat (None: all).
      pbound: the power bound of the relaxed projection (None: exact).

    Returns:
      (Delta complex64 [B, K, h, w], the misfit [B] of phi).
    """
    alpha = tf.constant(alpha, tf.complex64)
    phi_hat = self.spectra(obj, probe, group)
    z_hat = (1.0 + alpha) * phi_hat - alpha * waves_hat
    delta = modulus_projection(z_hat, amplitudes, pbound) - phi_hat
    return delta, self.misfit(phi_hat, amplitudes)

  def project(self, waves, amplitudes, pbound=None):
    """Pi_F in real space: the exit waves whose spectra have the measured
    moduli, backpropagate(modulus_projection(propagate(waves)))."""
    return self.backpropagate(
        modulus_projection(self.propagate(waves), amplitudes, pbound))

  def exit_wave_update(self, spectra, amplitudes, noise_model="gaussian"):
    """chi_j: the exit-wave change that lowers the likelihood, in real space.

    "gaussian": the amplitude least squares sum (|Psi| - A)^2, whose gradient
    step of length 1 is its exact minimiser, the modulus projection:
    chi = F^-1(Pi_F(Psi) - Psi). "poisson": the likelihood
    sum |Psi|^2 - A^2 log |Psi|^2, gradient r Psi with r = 1 - A^2 / |Psi|^2
    (clipped below at -POISSON_CLIP, which keeps the fixed point), and one
    Newton step of the likelihood along it per pattern from a = 0:
    a_j = sum r (|Psi|^2 - A^2) / sum r^2 (|Psi|^2 + A^2);
    chi = -F^-1(a r Psi).

    Args:
      spectra: complex64 [..., h, w] Psi_j, loop frame.
      amplitudes: float32 [..., h, w] A_j, loop frame.
      noise_model: one of NOISE_MODELS.

    Returns:
      complex64 [..., h, w].
    """
    spectra = tf.convert_to_tensor(spectra, tf.complex64)
    if noise_model == "gaussian":
      return self.backpropagate(modulus_projection(spectra, amplitudes) -
                                spectra)
    if noise_model != "poisson":
      raise ValueError(f"noise model {noise_model!r} is not one of "
                       f"{NOISE_MODELS}")
    power = (tf.math.square(tf.math.real(spectra)) +
             tf.math.square(tf.math.imag(spectra)))
    data = tf.cast(amplitudes, tf.float32) ** 2
    # r = 1 - A^2 / max(|Psi|^2, A^2 / (1 + POISSON_CLIP)) is the clipped r,
    # with a gradient that stays finite where |Psi|^2 is far below A^2: the
    # plain ratio's d/d|Psi|^2 = A^2 / |Psi|^4 overflows there, and the
    # clip's zero times inf is NaN (which, through an unrolled refinement,
    # reaches every learned variable). The floor _POWER_FLOOR bounds it
    # where A^2 is itself tiny. Where the model is exactly 0 the gradient
    # r Psi is 0 whatever r is.
    floor = tf.maximum(data / (1.0 + POISSON_CLIP), _POWER_FLOOR)
    ratio = 1.0 - tf.math.divide_no_nan(data, tf.maximum(power, floor))
    step = tf.math.divide_no_nan(
        tf.reduce_sum(ratio * (power - data), axis=(-2, -1), keepdims=True),
        tf.reduce_sum(ratio ** 2 * (power + data), axis=(-2, -1),
                      keepdims=True))
    return self.backpropagate(-forward.real_to_complex(step * ratio) * spectra)

  # --- Object and probe -------------------------------------------------------

  def illumination(self, probe, group=None):
    """sum_j |P|^2 over the group's windows at each pixel: float32 [..., H, W].

    Args:
      probe: complex64 [..., h, w], e.g. [B, h, w].
    """
    windows = self.windows_of(group)
    power = tf.abs(tf.convert_to_tensor(probe, tf.complex64)) ** 2
    weight = tf.expand_dims(power, -3) * tf.ones([windows.count, 1, 1],
                                                 tf.float32)
    return windows.stitch(weight, method="segment")

  def lit_region(self, probe, fraction=layouts.REGION_FRACTION):
    """float32 [..., H, W]: 1 where sum_j |P|^2 over all positions reaches
    `fraction` of its maximum, else 0 (`layouts.illuminated_region` in a
    graph: the region the data say something about)."""
    total = self.illumination(probe)
    peak = tf.reduce_max(total, axis=(-2, -1), keepdims=True)
    return tf.cast(total >= fraction * peak, tf.float32)

  def backproject(self, waves, probe, group=None, method="segment"):
    """sum_j conj(P) psi_j, each at its window: complex64 [..., H, W].

    The adjoint of `exit_waves` in the object (`Windows.stitch` with
    `method`; compiled loops use "slices").
    """
    return self.windows_of(group).stitch(
        tf.math.conj(_batched(probe)) * waves, method=method)

  def solve_object(self, waves, probe, inertia, group=None, norm=None,
                   previous=None, method="segment"):
    """The object that best explains exit waves, with inertia.

    O = (sum_j conj(P) psi_j + e O') / (sum_j |P|^2 + e) at each pixel, the
    sums over the group's windows covering it, e = inertia * max(sum_j |P|^2)
    per scan: DM's overlap projection of exit waves, and, applied to an
    exit-wave update chi with previous None, the preconditioned object
    direction of LSQML and of the refinement steps.

    Args:
      waves: complex64 [..., K, h, w].
      probe: complex64 [..., h, w].
      inertia: e / max(sum_j |P|^2) (> 0).
      group: the windows' group (None: all).
      norm: float32 [..., H, W] `illumination(probe, group)` when known.
      previous: None (zeros) or complex64 [..., H, W] O'.
      method: the stitch method.

    Returns:
      complex64 [..., H, W]; O' (or 0) where no window covers the pixel.
    """
    if norm is None:
      norm = self.illumination(probe, group)
    return with_inertia(self.backproject(waves, probe, group, method), norm,
                        previous, inertia)

  @staticmethod
  def solve_probe(waves, views, inertia, previous=None, support=None):
    """The probe that best explains exit waves, with inertia.

    P = (sum_j conj(O_j) psi_j + e P') / (sum_j |O_j|^2 + e),
    e = inertia * max(sum_j |O_j|^2) per scan, times the support mask when
    given: DM's probe update, and with previous None LSQML's probe direction
    of an exit-wave update.

    Args:
      waves: complex64 [B, K, h, w].
      views: complex64 [B, K, h, w], the object windows O_j.
      inertia: (> 0).
      previous: None (zeros) or complex64 [B, h, w] P'.
      support: None or float32 [h, w] mask.

    Returns:
      complex64 [B, h, w].
    """
    numerator = tf.reduce_sum(tf.math.conj(views) * waves, axis=-3)
    norm = tf.reduce_sum(tf.abs(views) ** 2, axis=-3)
    probe = with_inertia(numerator, norm, previous, inertia)
    if support is not None:
      probe = probe * tf.cast(support, tf.complex64)
    return probe
