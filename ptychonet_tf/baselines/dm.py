"""Difference map (Thibault et al., Science 2008; Ultramicroscopy 2009) in TensorFlow.

Notation: object O complex64 [B, H, W], probe P complex64 [B, h, w], exit
waves psi_j complex64 [B, N, h, w], measured amplitudes A_j float32
[B, N, h, w]; O_j is the j-th window O[top:bottom, left:right] of the layout.
B scans that share one layout are reconstructed together (one batch).

One iteration (alpha = 1 is the classic DM):

  overlap projection   O   = (sum_j conj(P) psi_j + e O') / (sum_j |P|^2 + e)
                       [P  = (sum_j conj(O_j) psi_j + e_P P') / (sum_j |O_j|^2 + e_P)
                        alternated with O when refining the probe]
                       phi_j = P * O_j
  Fourier projection   Pi_F(z) = F^-1[A * F(z) / |F(z)|]
  update               psi <- psi + Pi_F((1 + alpha) phi - alpha psi) - phi

O' and P' are the previous estimates; the inertia e = object_inertia *
max(sum_j |P|^2) keeps pixels the probe barely reaches (and unscanned ones,
where the sums are 0) at their previous value instead of dividing by ~0.

The reported estimate after iteration t is O_t of its overlap projection; each
iteration records chi_t = ||O_t - O_{t-1}|| / ||O_t|| (norms over the scanned
region, every pixel some window covers) and the Fourier error
sum_j || |F(phi_j)| - A_j ||^2 / sum_j ||A_j||^2 of the estimate.

Noisy data (optional, `fourier_relax` > 0): the Fourier projection only moves
a pattern whose mean squared amplitude misfit exceeds the power bound
pbound = 0.25 * fourier_relax^2 * mean(A^2), and then only down to that
bound (the "fourier_relax_factor" of ptypy); 0 is the exact projection.

The engine calls what it exposes (ptypy style): one iteration is built from
the public, batched update steps `object_update`, `probe_update`,
`illumination` (the sum_j |P|^2 normaliser) and `fourier_update` (the
pointwise modulus replacement of `baselines.common`), on one
`physics.windows.Windows` of the layout; the tests call the same functions.
`fourier_projection` is Pi_F in the detector convention of `physics.forward`
(F = far_field, unitary and centred, zero frequency at (h//2, w//2)):
far_field -> fourier_update -> inverse_far_field. The compiled loop works in
the unshifted frame instead: the amplitudes are ifftshifted and scaled by
sqrt(h*w) once, so every iteration does plain fft2d/ifft2d (an fftshift costs
about as much as the FFT itself on CPU). The Fourier update is pointwise, so
both frames give the same iterates.

The loop keeps the exit waves as their spectra F(psi) only. By linearity
F((1+a) phi - a psi) = (1+a) F(phi) - a F(psi) and F(psi_new) = F(psi) +
Pi - F(phi), so an iteration does exactly two FFTs of N patterns per scan
(forward of phi, inverse of F(psi_new) for the overlap projection's sum)
and still sees |F(phi)|, the Fourier error of the estimate; not carrying
psi itself saves a read and a write of all N exit waves per iteration,
which on small scans is a good part of what is not FFT.
"""
import dataclasses
import functools
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf.baselines import common
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError

# Shared with ePIE; they live in `baselines.common` and stay importable here.
Reconstruction = common.Reconstruction
INITS = common.INITS
prepare_inputs = common.prepare_inputs
initial_objects = common.initial_objects
fourier_update = common.fourier_update


@dataclasses.dataclass(frozen=True)
class DMConfig:
  """Settings of a difference-map run.

  Attributes:
    iterations: DM iterations.
    alpha: DM relaxation; 1 is the classic difference map.
    refine_probe: also update the probe in the overlap projection.
    probe_start: first iteration (0-based) that refines the probe.
    overlap_iterations: object/probe alternations per overlap projection
      when refining the probe.
    probe_support: when refining, the probe is set to 0 outside a centred
      disk of radius probe_support * min(h, w) / 2 (0 disables).
    init: initial object when none is given: "ones" (a flat object) or
      "random" (unit amplitude, phase uniform in [-pi, pi), from `seed`).
    seed: seed of the random initial object.
    object_inertia: e = object_inertia * max(sum|P|^2) in the object update.
    probe_inertia: e_P = probe_inertia * max(sum|O_j|^2) in the probe update.
    fourier_relax: power-bound factor of the Fourier projection for noisy
      data; 0 projects exactly.
    chunk: iterations per compiled call (the progress bar moves per chunk).
    jit_compile: compile the iterations with XLA.
    position_groups: iterations with a known probe split the positions into
      this many interleaved groups, each group's half-step (gather, FFTs,
      modulus replacement, stitch) a compiled function of its own, so that
      TensorFlow runs them side by side on separate cores (XLA runs a
      stitch's scatter-add on one thread; see docs/baselines.md, Speed).
      0 = one group per core TensorFlow may use (`group_count`); 1 = one
      compiled loop. The result is the same up to float rounding.
    progress: show a tqdm bar; None shows it for runs of 50 iterations or more
      when stderr is a terminal.
  """
  iterations: int = 300
  alpha: float = 1.0
  refine_probe: bool = False
  probe_start: int = 10
  overlap_iterations: int = 2
  probe_support: float = 0.0
  init: str = "ones"
  seed: int = 0
  object_inertia: float = 1e-6
  probe_inertia: float = 1e-6
  fourier_relax: float = 0.0
  chunk: int = 10
  jit_compile: bool = True
  position_groups: int = 0
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.iterations < 0:
      raise UserError(f"DM iterations={self.iterations} must be >= 0")
    if self.position_groups < 0:
      raise UserError(f"position_groups={self.position_groups} must be >= 0 "
                      f"(0: one per core TensorFlow may use)")
    if self.init not in INITS:
      raise UserError(f"initial object {self.init!r} is not one of {INITS}")
    if self.chunk < 1 or self.overlap_iterations < 1:
      raise UserError(f"chunk={self.chunk} and overlap_iterations="
                      f"{self.overlap_iterations} must be >= 1")
    if self.object_inertia <= 0 or self.probe_inertia <= 0:
      raise UserError(f"object_inertia={self.object_inertia} and probe_inertia="
                      f"{self.probe_inertia} must be > 0")
    if self.fourier_relax < 0 or not 0 <= self.probe_support <= 2:
      raise UserError(f"fourier_relax={self.fourier_relax} must be >= 0 and "
                      f"probe_support={self.probe_support} in [0, 2]")
    if self.probe_start < 0:
      raise UserError(f"probe_start={self.probe_start} must be >= 0")


def group_count():
  """Cores TensorFlow may use: those the process may run on (`taskset`),
  capped by the inter-op thread setting when one is made (--threads)."""
  cores = len(machine.usable_cores())
  threads = tf.config.threading.get_inter_op_parallelism_threads()
  return max(1, min(cores, threads) if threads else cores)


# --- The update steps (public; the compiled loop calls these) --------------


def fourier_projection(psi, amplitudes):
  """Pi_F in the detector convention: far_field -> fourier_update -> inverse.

  Args:
    psi: complex64 [..., h, w] exit waves.
    amplitudes: float32 [..., h, w], detector convention.

  Returns:
    complex64 [..., h, w]: the exit waves whose far-field moduli are the
    amplitudes (a spectrum that is exactly 0 stays 0).
  """
  return forward.inverse_far_field(
      fourier_update(forward.far_field(psi), amplitudes))


def illumination(probe, windows):
  """The object update's normaliser sum_j |P|^2 at each object pixel.

  Args:
    probe: complex64 [..., h, w], e.g. [B, h, w].
    windows: physics.windows.Windows of the scan.

  Returns:
    float32 [..., H, W]; 0 where no window covers the pixel.
  """
  power = tf.abs(tf.convert_to_tensor(probe, tf.complex64)) ** 2
  weight = tf.expand_dims(power, -3) * tf.ones([windows.count, 1, 1],
                                               tf.float32)
  return windows.stitch(weight, method="segment")


def object_update(psi, probe, windows, previous=None, inertia=1e-6,
                  norm=None, method="segment"):
  """The object that best explains the exit waves (overlap projection).

  O = (sum_j conj(P) psi_j + e O') / (sum_j |P|^2 + e) at each pixel, the
  sums over the windows covering it, e = inertia * max(sum_j |P|^2) per scan.

  Args:
    psi: complex64 [..., N, h, w] exit waves, e.g. [B, N, h, w].
    probe: complex64 [..., h, w].
    windows: physics.windows.Windows of the scan.
    previous: complex64 [..., H, W] previous object O' (None: zeros).
    inertia: relative weight of the previous object (> 0).
    norm: float32 [..., H, W] `illumination(probe, windows)` when already
      known (None: computed here).
    method: the stitch method (`Windows.stitch`); the compiled loop uses
      "slices".

  Returns:
    complex64 [..., H, W]; O' where no window covers the pixel.
  """
  psi = tf.convert_to_tensor(psi, tf.complex64)
  probe = tf.convert_to_tensor(probe, tf.complex64)
  if norm is None:
    norm = illumination(probe, windows)
  numerator = windows.stitch(tf.expand_dims(tf.math.conj(probe), -3) * psi,
                             method=method)
  return common.with_inertia(numerator, norm, previous, inertia)


def probe_update(psi, obj, windows, previous=None, inertia=1e-6,
                 support=None):
  """The probe that best explains the exit waves.

  P = (sum_j conj(O_j) psi_j + e P') / (sum_j |O_j|^2 + e), e = inertia *
  max(sum_j |O_j|^2) per scan, times the support mask when given.

  Args:
    psi: complex64 [..., N, h, w] exit waves, e.g. [B, N, h, w].
    obj: complex64 [..., H, W].
    windows: physics.windows.Windows of the scan.
    previous: complex64 [..., h, w] previous probe P' (None: zeros).
    inertia: relative weight of the previous probe (> 0).
    support: None or float32 [h, w] mask the probe is multiplied by.

  Returns:
    complex64 [..., h, w].
  """
  psi = tf.convert_to_tensor(psi, tf.complex64)
  views = windows.extract(tf.convert_to_tensor(obj, tf.complex64))
  numerator = tf.reduce_sum(tf.math.conj(views) * psi, axis=-3)
  norm = tf.reduce_sum(tf.abs(views) ** 2, axis=-3)
  probe = common.with_inertia(numerator, norm, previous, inertia)
  if support is not None:
    probe = probe * tf.cast(support, tf.complex64)
  return probe


# --- The solver ------------------------------------------------------------


class DifferenceMap:
  """Difference map for a batch of scans that share one layout.

  Build once, `run` as often as needed: the compiled iterations are traced on
  the first run and reused (at most two traces: with and without probe
  refinement).

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]), the known or initial probe.
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: DMConfig.
  """

  def __init__(self, amplitudes, probe, layout, object_shape, config=DMConfig()):
    (amplitudes, probe, layout, object_shape,
     self.batched) = prepare_inputs(amplitudes, probe, layout, object_shape)
    self.config = config
    self.object_shape = object_shape
    self.layout = layout
    self.batch, self.count, h, w = amplitudes.shape
    self.probe_shape = (h, w)
    self.probe = probe
    groups = min(config.position_groups or group_count(), self.count)
    # Inside, the positions are in group order (group k: every groups-th
    # position from the k-th), so that group k is the slice _bounds[k].
    members = layouts.interleaved_groups(self.count, groups)
    self._order = np.concatenate(members)
    sizes = np.cumsum([0] + [len(m) for m in members])
    self._bounds = list(zip(sizes[:-1], sizes[1:]))
    layout = layout[self._order]
    self._windows = windows_lib.Windows(layout, object_shape, (h, w))
    self._group_windows = [windows_lib.Windows(layout[a:b], object_shape,
                                               (h, w))
                           for a, b in self._bounds]
    # Variables, not constants: `set_amplitudes` swaps in the next batch of
    # scans without retracing the compiled iterations.
    self._amplitudes, self._energy, self._pbound = (
        tf.Variable(v, trainable=False)
        for v in self._amplitude_terms(amplitudes))
    self._support = (tf.constant(common.support_mask((h, w),
                                                     config.probe_support))
                     if config.probe_support > 0 else None)
    covered = self._windows.coverage() > 0
    self._covered_f = tf.constant(covered[None].astype(np.float32))
    # The stitches add the windows in place under XLA, one after another
    # (Windows.stitch "slices"); without XLA every addition would copy the
    # object, so there the segment sum.
    self._stitch = "slices" if config.jit_compile else "segment"
    self._chunk = tf.function(self._iterate, jit_compile=config.jit_compile)
    self._group_steps = [
        tf.function(functools.partial(self._group_step, k),
                    jit_compile=config.jit_compile)
        for k in range(len(self._bounds))]
    self._combine = tf.function(self._object_and_chi,
                                jit_compile=config.jit_compile)
    self._grouped_chunk = tf.function(self._iterate_grouped)
    self._compiled = set()

  def _amplitude_terms(self, amplitudes):
    """(amplitudes in the loop's frame, energy [B], power bound [B, 1])."""
    loop_amplitudes = common.unshifted_amplitudes(amplitudes[:, self._order])
    power = np.square(loop_amplitudes, dtype=np.float64)
    energy = np.maximum(power.sum(axis=(1, 2, 3)), 1e-30).astype(np.float32)
    # Power bound per scan [B, 1], in the loop's frame (mean over pixels).
    pbound = (0.25 * self.config.fourier_relax ** 2 *
              power.mean(axis=(1, 2, 3)))[:, None].astype(np.float32)
    return loop_amplitudes.astype(np.float32), energy, pbound

  def set_amplitudes(self, amplitudes):
    """Reuses this solver (and its compiled iterations) for other scans.

    Args:
      amplitudes: float [N, h, w] or [B, N, h, w] of the same shape as the
        amplitudes the solver was built with (same geometry and batch).
    """
    amplitudes = common.replacement_amplitudes(self, amplitudes)
    for variable, value in zip(
        (self._amplitudes, self._energy, self._pbound),
        self._amplitude_terms(amplitudes)):
      variable.assign(value)

  def _overlap(self, psi, previous, probe, norm, refine):
    """Overlap projection: object (and probe, alternated, when refining)."""
    config, windows = self.config, self._windows
    if not refine:
      return (object_update(psi, probe, windows, previous,
                            config.object_inertia, norm, self._stitch),
              probe, norm)
    obj = previous
    for _ in range(config.overlap_iterations):
      obj = object_update(psi, probe, windows, obj, config.object_inertia,
                          norm, self._stitch)
      probe = probe_update(psi, obj, windows, probe, config.probe_inertia,
                           self._support)
      norm = illumination(probe, windows)
    return obj, probe, norm

  def _exit_waves(self, obj, psi_hat, probe, windows, amps):
    """The DM update of the exit waves of `windows` from the new object.

    Returns the new exit waves' spectra F(psi) and the misfit [B] of the
    estimate's spectra, sum_j || |F(P O_j)| - A_j ||^2.
    """
    alpha = tf.constant(self.config.alpha, tf.complex64)
    pbound = self._pbound if self.config.fourier_relax > 0 else None
    phi_hat = tf.signal.fft2d(probe[:, None] * windows.extract(obj))
    z_hat = (1.0 + alpha) * phi_hat - alpha * psi_hat
    delta = fourier_update(z_hat, amps, pbound) - phi_hat
    misfit = tf.reduce_sum((tf.abs(phi_hat) - amps) ** 2, axis=(1, 2, 3))
    return psi_hat + delta, misfit

  def _iterate(self, state, num, refine):
    """`num` DM iterations; returns the new state and chi, error [num, B]."""

    def body(t, psi_hat, obj, probe, norm, chi, err):
      psi = tf.signal.ifft2d(psi_hat)
      new_obj, probe, norm = self._overlap(psi, obj, probe, norm, refine)
      psi_hat, misfit = self._exit_waves(new_obj, psi_hat, probe,
                                         self._windows, self._amplitudes)
      chi = chi.write(t, common.relative_change(new_obj, obj, self._covered_f))
      err = err.write(t, misfit / self._energy)
      return t + 1, psi_hat, new_obj, probe, norm, chi, err

    chi = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    err = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    out = tf.while_loop(lambda t, *_: t < num, body,
                        (tf.constant(0), *state, chi, err))
    return tuple(out[1:5]), out[5].stack(), out[6].stack()

  def _group_step(self, k, obj, psi_hat, probe):
    """Group k's half of a known-probe iteration from the new object.

    Returns its exit waves' spectra, its stitch sum_j conj(P) psi_j and its
    misfit [B].
    """
    start, stop = self._bounds[k]
    windows = self._group_windows[k]
    psi_hat, misfit = self._exit_waves(
        obj, psi_hat, probe, windows, self._amplitudes[:, start:stop])
    stitched = windows.stitch(
        tf.math.conj(probe)[:, None] * tf.signal.ifft2d(psi_hat),
        method=self._stitch)
    return psi_hat, stitched, misfit

  def _object_and_chi(self, sums, obj, norm):
    """The object update from the groups' stitches, and its chi [B]."""
    new_obj = common.with_inertia(tf.add_n(sums), norm, obj,
                                  self.config.object_inertia)
    return new_obj, common.relative_change(new_obj, obj, self._covered_f)

  def _iterate_grouped(self, state, num):
    """`num` known-probe iterations, the groups' half-steps side by side.

    The same iteration as `_iterate` without probe refinement: the object
    update sums the groups' stitches; each group then runs its compiled
    half-step, which TensorFlow's inter-op threads run concurrently.
    """
    psi_hat, obj, probe, norm = state
    hats = [psi_hat[:, a:b] for a, b in self._bounds]
    sums = [w.stitch(tf.math.conj(probe)[:, None] * tf.signal.ifft2d(q),
                     method="segment")
            for w, q in zip(self._group_windows, hats)]

    def body(t, hats, sums, obj, chi, err):
      new_obj, change = self._combine(sums, obj, norm)
      outs = [step(new_obj, q, probe)
              for step, q in zip(self._group_steps, hats)]
      chi = chi.write(t, change)
      err = err.write(t, tf.add_n([o[2] for o in outs]) / self._energy)
      return (t + 1, [o[0] for o in outs], [o[1] for o in outs], new_obj,
              chi, err)

    chi = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    err = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    _, hats, _, obj, chi, err = tf.while_loop(
        lambda t, *_: t < num, body,
        (tf.constant(0), hats, sums, obj, chi, err))
    state = (tf.concat(hats, 1), obj, probe, norm)
    return state, chi.stack(), err.stack()

  def initial_state(self, initial_object=None):
    """(F(psi), object, probe, norm) for a starting object."""
    obj = tf.constant(initial_objects(self.config.init, self.object_shape,
                                      self.batch, self.config.seed,
                                      initial_object))
    probe = tf.constant(self.probe)
    psi = probe[:, None] * self._windows.extract(obj)
    return (tf.signal.fft2d(psi), obj, probe,
            illumination(probe, self._windows))

  def run(self, initial_object=None, iterations=None, monitor=None):
    """Runs DM from `initial_object` (complex [H, W] or [B, H, W]; None: config.init).

    Args:
      initial_object: the start; None uses config.init.
      iterations: overrides config.iterations.
      monitor: optional callable(done, object) called after every compiled
        chunk with the iterations done so far and the current objects,
        complex64 numpy [B, H, W] (e.g. to record an error curve; its time
        counts in `seconds` but not in `seconds_per_iteration`).

    Returns:
      Reconstruction (without a batch axis when the amplitudes had none).
    """
    config = self.config
    iterations = config.iterations if iterations is None else int(iterations)
    start = time.perf_counter()
    state = [self.initial_state(initial_object)]

    def chunk(num, refine):
      if refine or len(self._bounds) == 1:
        state[0], chi, err = self._chunk(state[0], tf.constant(num), refine)
        # One compiled function per refinement setting (num is a tensor).
        return chi.numpy(), err.numpy(), refine
      state[0], chi, err = self._grouped_chunk(state[0], tf.constant(num))
      return chi.numpy(), err.numpy(), "grouped"

    chi, err, seconds, per = common.run_chunks(
        iterations, config, chunk, lambda: state[0][1].numpy(), self._compiled,
        self.batch, start, monitor)
    result = Reconstruction(
        object=state[0][1].numpy(), probe=state[0][2].numpy(), chi=chi,
        fourier_error=err, seconds=seconds, seconds_per_iteration=per,
        method="dm")
    return common.squeeze_batch(result, self.batched)


def difference_map(amplitudes, probe, layout, object_shape, config=DMConfig(),
                   initial_object=None):
  """Reconstructs objects with the difference map; see `DifferenceMap`.

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]).
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: DMConfig.
    initial_object: optional complex [H, W] or [B, H, W] start (e.g. the
      PtychoNet estimate); None starts from config.init.

  Returns:
    Reconstruction.
  """
  solver = DifferenceMap(amplitudes, probe, layout, object_shape, config)
  return solver.run(initial_object)
