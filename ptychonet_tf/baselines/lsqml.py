"""Least-squares maximum-likelihood ptychography (LSQML) in TensorFlow.

Odstrcil, Menzel & Guizar-Sicairos, "Iterative least-squares solver for
generalized maximum-likelihood ptychography", Opt. Express 26, 3108 (2018).

Notation as in `baselines.dm`: object O complex64 [B, H, W], probe P
complex64 [B, h, w], amplitudes A_j float32 [B, N, h, w]; B scans that share
one layout are reconstructed together. F is the FFT, O_j the j-th window.

The N positions are split once into disjoint batches S of about `batch_size`
positions (`position_batches`). One iteration visits the batches in turn;
for a batch, all of its positions at once:

  exit waves        psi_j = P O_j,  Psi_j = F psi_j
  exit-wave update  chi_j = F^-1[Psi_j A_j / |Psi_j|] - psi_j      (gaussian)
                    chi_j = -a_j F^-1[(1 - A_j^2 / |Psi_j|^2) Psi_j] (poisson)
  object direction  dO  = sum_j conj(P) chi_j / (sum_j |P|^2 + d_O)
  probe direction   dP  = sum_j conj(O_j) chi_j / (sum_j |O_j|^2 + d_P)
  step lengths      (a_O,j, a_P,j) = argmin || chi_j - a_O P dO_j
                                              - a_P dP O_j ||^2
  update            O += a_O dO,  P += a_P dP

the sums running over the batch's positions j in S. "gaussian" is the
amplitude-based likelihood sum (|Psi| - A)^2, whose gradient step of length
1 is its exact minimiser, the modulus replacement (`common.fourier_update`, the same step
as DM's). "poisson" is the likelihood sum |Psi|^2 - A^2 log |Psi|^2; its
gradient is r Psi, r = 1 - A^2 / |Psi|^2, and a_j, the step along it per
pattern, is one Newton step of the likelihood from a = 0:

  a_j = sum r (|Psi|^2 - A^2) / sum r^2 (|Psi|^2 + A^2)

(= sum r^2 |Psi|^2 / sum r^2 (|Psi|^2 + A^2), about 1/2 near the solution:
the paper's relaxed Poisson update). r is clipped below at -POISSON_CLIP, so
that pixels where the model is nearly dark but the data are not do not
dominate a_j (from a flat start they would stall the run); the clip keeps
the sign of r, so the fixed point |Psi| = A is unchanged. The
regularisers d_O = object_reg * max(sum_j |P|^2) and d_P = probe_reg *
max(sum_j |O_j|^2) keep the preconditioned directions finite where the
illumination is faint. The step lengths solve, per position, the 2x2 normal
equations of the linearised least-squares problem (a 1x1 one without probe
refinement), their diagonal loaded by step_reg times its batch mean; each is
clipped to [0, max_step], and the batch moves by their mean over its
positions, as the paper's mini-batch variant does.

Each iteration records chi = ||O_t - O_{t-1}|| / ||O_t|| over the scanned
region and the Fourier error sum_j || |Psi_j| - A_j ||^2 / sum_j ||A_j||^2
of the exit waves met during the iteration (before their batch's update), as
ePIE does.

FFT convention: as in DM, the amplitudes are ifftshifted and scaled by
sqrt(h*w) once (`common.unshifted_amplitudes`), so each batch does a plain
fft2d / ifft2d pair of its patterns: an iteration costs the two FFTs of N
patterns that a DM iteration costs. Each batch has its own
`physics.windows.Windows` (the batch's rows of the layout): extract and
stitch are the package's one window operator. The batches are unrolled
inside one compiled `tf.while_loop` body over iterations.
"""
import dataclasses
import time
from typing import Optional

import numpy as np
from scipy import spatial
import tensorflow as tf

from ptychonet_tf.baselines import common
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.utils.errors import UserError

NOISE_MODELS = ("gaussian", "poisson")
GROUPINGS = ("sparse", "compact")
# The Poisson ratio r = 1 - A^2 / |Psi|^2 is clipped below at -POISSON_CLIP:
# where the model is nearly dark but the data are not, r is huge, and those
# pixels would dominate the pattern's Newton step (a flat start stalls).
POISSON_CLIP = 10.0


@dataclasses.dataclass(frozen=True)
class LSQMLConfig:
  """Settings of an LSQML run.

  Attributes:
    iterations: LSQML iterations (each visits every position once).
    batch_size: positions updated together; the N positions are split into
      ceil(N / batch_size) batches of nearly equal size (1: one position at a
      time; N: all at once). Each batch is unrolled in the compiled loop, so
      the batch count also sets the compile time.
    grouping: how positions are grouped: "sparse" (each batch spread over the
      whole scan) or "compact" (each batch a patch of neighbours).
    noise_model: "gaussian" (amplitude least squares) or "poisson".
    refine_probe: also update the probe.
    probe_start: first iteration (0-based) that refines the probe.
    init: initial object when none is given ("ones" or "random", see
      dm.DMConfig).
    seed: seed of the random initial object.
    object_reg: d_O relative to max(sum_j |P|^2) of the batch; 0.01
      converges much faster on dense, well-lit noise-free scans but fits
      noise and can diverge where a probe's faint rim lights much of the
      object (docs/baselines.md).
    probe_reg: d_P relative to max(sum_j |O_j|^2) of the batch.
    step_reg: diagonal loading of the step-length equations, relative to the
      batch mean of the diagonal.
    max_step: the per-position step lengths are clipped to [0, max_step].
    chunk: iterations per compiled call.
    jit_compile: compile the iterations with XLA.
    progress: tqdm bar; None shows it for runs of 50 iterations or more on a
      terminal.
  """
  iterations: int = 300
  batch_size: int = 10
  grouping: str = "sparse"
  noise_model: str = "gaussian"
  refine_probe: bool = False
  probe_start: int = 10
  init: str = "ones"
  seed: int = 0
  object_reg: float = 0.1
  probe_reg: float = 0.1
  step_reg: float = 1e-3
  max_step: float = 10.0
  chunk: int = 10
  jit_compile: bool = True
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.iterations < 1:
      raise UserError(f"LSQML iterations={self.iterations} must be >= 1")
    if self.batch_size < 1:
      raise UserError(f"LSQML batch_size={self.batch_size} must be >= 1")
    if self.noise_model not in NOISE_MODELS:
      raise UserError(f"LSQML noise model {self.noise_model!r} is not one of "
                      f"{NOISE_MODELS}")
    if self.grouping not in GROUPINGS:
      raise UserError(f"LSQML grouping {self.grouping!r} is not one of "
                      f"{GROUPINGS}")
    if self.init not in common.INITS:
      raise UserError(f"initial object {self.init!r} is not one of "
                      f"{common.INITS}")
    if self.chunk < 1 or self.probe_start < 0:
      raise UserError(f"chunk={self.chunk} must be >= 1 and probe_start="
                      f"{self.probe_start} >= 0")
    if self.object_reg <= 0 or self.probe_reg <= 0 or self.step_reg < 0:
      raise UserError(f"object_reg={self.object_reg} and probe_reg="
                      f"{self.probe_reg} must be > 0, step_reg="
                      f"{self.step_reg} >= 0")
    if self.max_step <= 0:
      raise UserError(f"max_step={self.max_step} must be > 0")


def position_batches(layout, batch_size, grouping="sparse"):
  """Splits the positions of a layout into disjoint batches.

  The windows' centres are put in a serpentine order (horizontal bands as
  high as the median nearest-neighbour spacing, read in alternating
  directions), so that neighbours in the order are neighbours on the object.
  "compact" cuts that order into consecutive runs (each batch a patch);
  "sparse" deals it out round-robin (batch b takes every n-th position from
  the b-th on), so each batch is spread over the scan and its windows
  overlap little.

  Args:
    layout: int [N, 4].
    batch_size: positions per batch, 1..N.
    grouping: "sparse" or "compact".

  Returns:
    list of ceil(N / batch_size) int numpy arrays of position indices, sizes
    differing by at most one, together a permutation of range(N).
  """
  layout = np.asarray(layout)
  count = len(layout)
  if not 1 <= batch_size <= count:
    raise UserError(f"LSQML batch_size={batch_size} must be in 1..{count} "
                    f"(the scan's number of positions)")
  number = -(-count // batch_size)
  centres = np.stack([layout[:, 0] + layout[:, 1],
                      layout[:, 2] + layout[:, 3]], axis=1) / 2.0
  band = 1.0
  if count > 1:
    spacing = spatial.cKDTree(centres).query(centres, k=2)[0][:, 1]
    band = max(float(np.median(spacing)), 1.0)
  y, x = centres.T
  row = np.floor((y - y.min()) / band)
  order = np.lexsort((np.where(row % 2 == 0, x, -x), row))
  if grouping == "compact":
    return list(np.array_split(order, number))
  if grouping == "sparse":
    return [order[b::number] for b in range(number)]
  raise UserError(f"LSQML grouping {grouping!r} is not one of {GROUPINGS}")


# --- The update steps (public; the compiled loop calls these) --------------


def exit_wave_update(spectra, amplitudes, noise_model="gaussian"):
  """chi_j: the exit-wave change that lowers the likelihood, in real space.

  Args:
    spectra: complex64 [..., h, w] Psi_j = F(psi_j), unshifted frame.
    amplitudes: float32 [..., h, w] A_j in the same frame.
    noise_model: "gaussian" (modulus replacement) or "poisson" (gradient
      step with its Newton step length per pattern).

  Returns:
    complex64 [..., h, w] chi_j = F^-1(Psi'_j - Psi_j).
  """
  spectra = tf.convert_to_tensor(spectra, tf.complex64)
  if noise_model == "gaussian":
    return tf.signal.ifft2d(common.fourier_update(spectra, amplitudes) -
                            spectra)
  if noise_model != "poisson":
    raise UserError(f"LSQML noise model {noise_model!r} is not one of "
                    f"{NOISE_MODELS}")
  power = tf.abs(spectra) ** 2
  data = tf.cast(amplitudes, tf.float32) ** 2
  # Where the model is exactly 0 the gradient r Psi is 0 whatever r is.
  ratio = tf.maximum(1.0 - tf.math.divide_no_nan(data, power), -POISSON_CLIP)
  # One Newton step of the likelihood along -r Psi, from a = 0.
  step = tf.math.divide_no_nan(
      tf.reduce_sum(ratio * (power - data), axis=(-2, -1), keepdims=True),
      tf.reduce_sum(ratio ** 2 * (power + data), axis=(-2, -1), keepdims=True))
  return tf.signal.ifft2d(-tf.cast(step * ratio, tf.complex64) * spectra)


def object_direction(chi, probe, windows, reg):
  """dO = sum_j conj(P) chi_j / (sum_j |P|^2 + d_O) over a batch's windows.

  Args:
    chi: complex64 [B, K, h, w] exit-wave updates of the batch.
    probe: complex64 [B, h, w].
    windows: physics.windows.Windows of the batch's K positions.
    reg: object_reg.

  Returns:
    complex64 [B, H, W]; 0 outside the batch's windows.
  """
  numerator = windows.stitch(tf.math.conj(probe)[:, None] * chi,
                             method="segment")
  power = tf.abs(probe) ** 2
  norm = windows.stitch(power[:, None] * tf.ones_like(chi, tf.float32),
                        method="segment")
  return common.with_inertia(numerator, norm, None, reg)


def probe_direction(chi, views, reg):
  """dP = sum_j conj(O_j) chi_j / (sum_j |O_j|^2 + d_P).

  Args:
    chi: complex64 [B, K, h, w].
    views: complex64 [B, K, h, w] the object windows O_j.
    reg: probe_reg.

  Returns:
    complex64 [B, h, w].
  """
  numerator = tf.reduce_sum(tf.math.conj(views) * chi, axis=1)
  norm = tf.reduce_sum(tf.abs(views) ** 2, axis=1)
  return common.with_inertia(numerator, norm, None, reg)


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


def batch_update(obj, probe, amplitudes, windows, config, refine):
  """One LSQML update of a batch of positions (all of them at once).

  Args:
    obj: complex64 [B, H, W].
    probe: complex64 [B, h, w].
    amplitudes: float32 [B, K, h, w] the batch's amplitudes, unshifted frame
      (`common.unshifted_amplitudes`).
    windows: physics.windows.Windows of the batch's K positions.
    config: LSQMLConfig (noise_model, object_reg, probe_reg, step_reg,
      max_step).
    refine: also update the probe (a Python bool).

  Returns:
    (object, probe, misfit float32 [B]): the updated object and probe and
    sum_j || |Psi_j| - A_j ||^2 of the batch before the update.
  """
  views = windows.extract(obj)
  psi = probe[:, None] * views
  spectra = tf.signal.fft2d(psi)
  misfit = tf.reduce_sum((tf.abs(spectra) - amplitudes) ** 2, axis=(1, 2, 3))
  chi = exit_wave_update(spectra, amplitudes, config.noise_model)
  d_obj = object_direction(chi, probe, windows, config.object_reg)
  object_term = probe[:, None] * windows.extract(d_obj)
  d_probe = probe_term = None
  if refine:
    d_probe = probe_direction(chi, views, config.probe_reg)
    probe_term = d_probe[:, None] * views
  alpha, beta = step_lengths(chi, object_term, probe_term, config.step_reg,
                             config.max_step)
  obj = obj + tf.cast(alpha, tf.complex64)[:, None, None] * d_obj
  if refine:
    probe = probe + tf.cast(beta, tf.complex64)[:, None, None] * d_probe
  return obj, probe, misfit


# --- The solver ------------------------------------------------------------


class LSQML:
  """LSQML for a batch of scans that share one layout (build once, run often).

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]), the known or initial probe.
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: LSQMLConfig.
  """

  def __init__(self, amplitudes, probe, layout, object_shape,
               config=LSQMLConfig()):
    (amplitudes, probe, layout, object_shape,
     self.batched) = common.prepare_inputs(amplitudes, probe, layout,
                                           object_shape)
    self.config = config
    self.object_shape = object_shape
    self.layout = layout
    self.batch, self.count, h, w = amplitudes.shape
    self.probe_shape = (h, w)
    self.probe = probe
    self.groups = position_batches(layout, config.batch_size, config.grouping)
    self._order = np.concatenate(self.groups)
    bounds = np.cumsum([0] + [len(g) for g in self.groups])
    self._slices = list(zip(bounds[:-1], bounds[1:]))
    self._windows = [windows_lib.Windows(layout[g], object_shape, (h, w))
                     for g in self.groups]
    # Variables, not constants: `set_amplitudes` swaps in other scans
    # without retracing. The positions are stored in batch order.
    self._amplitudes, self._energy = (
        tf.Variable(v, trainable=False)
        for v in self._amplitude_terms(amplitudes))
    covered = windows_lib.Windows(layout, object_shape, (h, w)).coverage() > 0
    self._covered_f = tf.constant(covered[None].astype(np.float32))
    self._chunk = tf.function(self._iterate, jit_compile=config.jit_compile)
    self._compiled = set()

  def _amplitude_terms(self, amplitudes):
    """(amplitudes [B, N, h, w] in the loop's frame and batch order, energy [B])."""
    loop = common.unshifted_amplitudes(amplitudes[:, self._order])
    energy = np.maximum(np.square(loop, dtype=np.float64).sum(axis=(1, 2, 3)),
                        1e-30).astype(np.float32)
    return loop, energy

  def set_amplitudes(self, amplitudes):
    """Reuses this solver (and its compiled iterations) for other scans.

    Args:
      amplitudes: float [N, h, w] or [B, N, h, w] of the shape the solver was
        built with.
    """
    amplitudes = common.replacement_amplitudes(self, amplitudes)
    for variable, value in zip((self._amplitudes, self._energy),
                               self._amplitude_terms(amplitudes)):
      variable.assign(value)

  def _iterate(self, obj, probe, num, refine):
    """`num` iterations; returns object, probe and chi, error [num, B]."""

    def body(t, obj, probe, chi, err):
      new_obj, misfit = obj, tf.zeros([self.batch], tf.float32)
      for windows, (start, stop) in zip(self._windows, self._slices):
        new_obj, probe, part = batch_update(
            new_obj, probe, self._amplitudes[:, start:stop], windows,
            self.config, refine)
        misfit += part
      chi = chi.write(t, common.relative_change(new_obj, obj,
                                                self._covered_f))
      err = err.write(t, misfit / self._energy)
      return t + 1, new_obj, probe, chi, err

    chi = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    err = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    _, obj, probe, chi, err = tf.while_loop(
        lambda t, *_: t < num, body, (tf.constant(0), obj, probe, chi, err))
    return obj, probe, chi.stack(), err.stack()

  def run(self, initial_object=None, iterations=None, monitor=None):
    """Runs LSQML; returns a common.Reconstruction (method "lsqml").

    Args:
      initial_object: complex [H, W] or [B, H, W] start; None: config.init.
      iterations: overrides config.iterations.
      monitor: optional callable(done, object) after every compiled chunk,
        object complex64 numpy [B, H, W] (see `dm.DifferenceMap.run`).
    """
    config = self.config
    iterations = config.iterations if iterations is None else int(iterations)
    start = time.perf_counter()
    obj = common.initial_objects(config.init, self.object_shape, self.batch,
                                 config.seed, initial_object)
    state = [tf.constant(obj), tf.constant(self.probe)]

    def chunk(num, refine):
      state[0], state[1], chi, err = self._chunk(state[0], state[1],
                                                 tf.constant(num), refine)
      return chi.numpy(), err.numpy(), refine

    chi, err, seconds, per = common.run_chunks(
        iterations, config, chunk, lambda: state[0].numpy(), self._compiled,
        self.batch, start, monitor)
    result = common.Reconstruction(
        object=state[0].numpy(), probe=state[1].numpy(), chi=chi,
        fourier_error=err, seconds=seconds, seconds_per_iteration=per,
        method="lsqml")
    return common.squeeze_batch(result, self.batched)


def lsqml(amplitudes, probe, layout, object_shape, config=LSQMLConfig(),
          initial_object=None):
  """Reconstructs objects with LSQML; see `LSQML`.

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]).
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: LSQMLConfig.
    initial_object: optional complex [H, W] or [B, H, W] start; None starts
      from config.init.

  Returns:
    common.Reconstruction.
  """
  return LSQML(amplitudes, probe, layout, object_shape, config).run(
      initial_object)
