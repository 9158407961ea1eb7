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

FFT conventions. The public single-step operators (`fourier_projection`,
`overlap_projection`, `probe_update`) use the detector convention of
`physics.forward`: F = far_field, unitary and centred, zero frequency at
(h//2, w//2). The compiled loop works in the unshifted frame instead: the
amplitudes are ifftshifted and scaled by sqrt(h*w) once, so every iteration
does plain fft2d/ifft2d (an fftshift costs about as much as the FFT itself on
CPU). The Fourier projection is pointwise, so both frames give the same
iterates.

The loop keeps F(psi) next to psi. By linearity F((1+a) phi - a psi) =
(1+a) F(phi) - a F(psi) and F(psi_new) = F(psi) + Pi - F(phi), so an iteration
does exactly two FFTs of N patterns per scan (forward of phi, inverse of the
correction) and still sees |F(phi)|, the Fourier error of the estimate.
"""
import dataclasses
import time
from typing import Optional

import numpy as np
import tensorflow as tf
import tqdm

from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts

INITS = ("ones", "random")


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
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.iterations < 0:
      raise UserError(f"DM iterations={self.iterations} must be >= 0")
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


@dataclasses.dataclass
class Reconstruction:
  """The result of an iterative reconstruction.

  Shapes carry a leading batch axis B only when the input amplitudes did.

  Attributes:
    object: complex64 [(B,) H, W]; unscanned pixels keep the initial object.
    probe: complex64 [(B,) h, w], the refined probe (or the given one).
    chi: float32 [T(, B)], ||O_t - O_{t-1}|| / ||O_t|| per iteration (epoch).
    fourier_error: float32 [T(, B)], relative squared amplitude error.
    seconds: wall time of the whole run, tracing and compilation included.
    seconds_per_iteration: steady-state time of one iteration (epoch) for the
      whole batch, measured over the compiled calls after the first one of
      each kind (the whole run when there is no such call).
    method: "dm" or "epie".
  """
  object: np.ndarray
  probe: np.ndarray
  chi: np.ndarray
  fourier_error: np.ndarray
  seconds: float
  seconds_per_iteration: float
  method: str


class WindowOperators:
  """extract/stitch for one layout and batch size with precomputed indices.

  The same operator pair as `physics.forward.extract/stitch` (an exact adjoint
  pair), specialised to a fixed batch B: the flat window indices and the
  segment ids are computed once, and stitch is one unsorted_segment_sum
  (several times faster on CPU than a tensor_scatter_nd_add).
  """

  def __init__(self, layout, object_shape, probe_shape, batch=1):
    self.object_shape = tuple(int(s) for s in object_shape)
    self.probe_shape = tuple(int(s) for s in probe_shape)
    self.batch = int(batch)
    big_h, big_w = self.object_shape
    self.size = big_h * big_w
    index = forward.patch_indices(layout, self.object_shape, self.probe_shape)
    self.index = index  # int32 [N, h, w] into the raveled H*W object
    offsets = tf.range(self.batch, dtype=tf.int32) * self.size
    self.segment_ids = tf.reshape(offsets[:, None] + tf.reshape(index, [1, -1]),
                                  [-1])  # int32 [B*N*h*w]

  def extract(self, obj):
    """[B, H, W] -> [B, N, h, w], any dtype."""
    return tf.gather(tf.reshape(obj, [self.batch, self.size]), self.index,
                     axis=1)

  def stitch(self, patches):
    """[B, N, h, w] -> [B, H, W]: sums the windows covering each pixel."""
    total = tf.math.unsorted_segment_sum(tf.reshape(patches, [-1]),
                                         self.segment_ids,
                                         self.batch * self.size)
    return tf.reshape(total, (self.batch,) + self.object_shape)


# --- Inputs ----------------------------------------------------------------


def prepare_inputs(amplitudes, probe, layout, object_shape):
  """Validates the inputs of a reconstruction; raises UserError on a mismatch.

  Args:
    amplitudes: float [N, h, w] or [B, N, h, w], finite and >= 0.
    probe: complex [h, w] or [B, h, w].
    layout: int [N, 4], every window inside the object.
    object_shape: (H, W).

  Returns:
    (amplitudes float32 [B, N, h, w], probe complex64 [B, h, w],
     layout int32 [N, 4], object_shape, batched) where batched tells whether
    the amplitudes had a batch axis.
  """
  amplitudes = np.asarray(amplitudes, np.float32)
  batched = amplitudes.ndim == 4
  if amplitudes.ndim == 3:
    amplitudes = amplitudes[None]
  if amplitudes.ndim != 4 or 0 in amplitudes.shape:
    raise UserError(f"amplitudes have shape {amplitudes.shape}; expected "
                    f"[N, h, w] or [B, N, h, w]")
  batch, count, h, w = amplitudes.shape
  if not np.all(np.isfinite(amplitudes)):
    raise UserError("amplitudes hold NaN or infinite values; expected finite "
                    "sqrt(intensity) >= 0")
  if np.any(amplitudes < 0):
    raise UserError("amplitudes hold negative values; expected sqrt(intensity) "
                    ">= 0 (pass amplitudes, not signed data)")
  probe = np.asarray(probe, np.complex64)
  if probe.ndim == 2:
    probe = probe[None]
  if probe.ndim != 3 or tuple(probe.shape[1:]) != (h, w) or (
      probe.shape[0] not in (1, batch)):
    raise UserError(f"probe has shape {probe.shape}; expected ({h}, {w}) (or "
                    f"({batch}, {h}, {w})) to match the amplitudes "
                    f"{amplitudes.shape}")
  if not np.all(np.isfinite(probe)):
    raise UserError("probe holds NaN or infinite values")
  if not np.any(probe != 0, axis=(1, 2)).all():
    raise UserError("probe is all zero")
  probe = np.broadcast_to(probe, (batch, h, w)).copy()
  layout = np.asarray(layout)
  if layout.ndim != 2 or layout.shape != (count, 4):
    raise UserError(f"layout has shape {layout.shape}; expected ({count}, 4) "
                    f"for {count} diffraction patterns")
  object_shape = tuple(int(s) for s in object_shape)
  layouts.check_layout(layout, object_shape, (h, w))
  return amplitudes, probe, layout.astype(np.int32), object_shape, batched


def initial_objects(init, object_shape, batch, seed=0, given=None):
  """The starting objects, complex64 [B, H, W].

  Args:
    init: "random" (unit amplitude, phase uniform in [-pi, pi)) or "ones".
    object_shape: (H, W).
    batch: B.
    seed: seed of the random phases.
    given: optional complex [H, W] or [B, H, W]; overrides `init`.
  """
  shape = (batch,) + tuple(object_shape)
  if given is not None:
    given = np.asarray(given, np.complex64)
    if given.ndim == 2:
      given = given[None]
    if given.ndim != 3 or given.shape[1:] != shape[1:] or given.shape[0] not in (
        1, batch):
      raise UserError(f"initial object has shape {given.shape}; expected "
                      f"{shape[1:]} or {shape}")
    if not np.all(np.isfinite(given)):
      raise UserError("initial object holds NaN or infinite values")
    return np.broadcast_to(given, shape).copy()
  if init == "ones":
    return np.ones(shape, np.complex64)
  if init == "random":
    phase = np.random.default_rng(seed).uniform(-np.pi, np.pi, shape)
    return np.exp(1j * phase).astype(np.complex64)
  raise UserError(f"initial object {init!r} is not one of {INITS}")


def unshifted_amplitudes(amplitudes):
  """Detector-convention amplitudes -> the loop's frame: ifftshift * sqrt(h*w).

  float32 [..., h, w] -> float32 [..., h, w], so that |fft2d(psi)| (plain,
  unnormalised) can be compared with the result directly.
  """
  h, w = amplitudes.shape[-2:]
  return (np.fft.ifftshift(amplitudes, axes=(-2, -1)) *
          np.float32(np.sqrt(h * w))).astype(np.float32)


def support_mask(probe_shape, fraction):
  """float32 [h, w]: 1 inside the centred disk of radius fraction*min(h,w)/2."""
  h, w = probe_shape
  y = np.arange(h)[:, None] - h // 2
  x = np.arange(w)[None, :] - w // 2
  return (np.hypot(y, x) <= fraction * min(h, w) / 2.0).astype(np.float32)


def progress_bar(total, progress, unit="it"):
  """A tqdm bar, or a disabled one (see DMConfig.progress)."""
  if progress is None:
    disable = None if total >= 50 else True  # None: only on a terminal
  else:
    disable = not progress
  return tqdm.tqdm(total=total, disable=disable, unit=unit, leave=False)


def squeeze_batch(result, batched):
  """Drops the batch axis of a Reconstruction unless `batched`."""
  if batched:
    return result
  result.object = result.object[0]
  result.probe = result.probe[0]
  result.chi = result.chi[:, 0]
  result.fourier_error = result.fourier_error[:, 0]
  return result


def steady_seconds(timed, total_seconds, iterations):
  """Seconds per iteration from (seconds, count, warm) records of compiled calls."""
  warm = [(s, n) for s, n, was_warm in timed if was_warm]
  if warm:
    return sum(s for s, _ in warm) / sum(n for _, n in warm)
  return total_seconds / max(iterations, 1)


def run_chunks(iterations, config, chunk, current, compiled, batch, start,
               monitor=None, unit="it"):
  """Drives a reconstruction in compiled chunks (shared by DM and ePIE).

  Chunks are at most `config.chunk` iterations and end where probe
  refinement starts, so one compiled call never mixes the two kinds.

  Args:
    iterations: iterations (DM) or epochs (ePIE) to run.
    config: DMConfig or EPIEConfig (chunk, refine_probe, probe_start,
      progress).
    chunk: callable(num, refine) -> (chi [num, B], error [num, B], key) that
      runs `num` iterations and keeps the solver's state; `key` names the
      compiled function it used (its first call also traces, so its time is
      left out of the steady-state figure).
    current: callable() -> complex64 numpy [B, H, W], the current objects.
    compiled: the solver's set of keys already traced (updated here).
    batch: scans in the batch.
    start: perf_counter() of the run's start (set-up counts in `seconds`).
    monitor: optional callable(done, objects) after every chunk.
    unit: progress bar unit.

  Returns:
    (chi [T, B], fourier error [T, B], seconds, seconds per iteration).
  """
  chis, errs, timed = [], [], []
  done = 0
  with progress_bar(iterations, config.progress, unit=unit) as bar:
    while done < iterations:
      refine = config.refine_probe and done >= config.probe_start
      num = min(config.chunk, iterations - done)
      if config.refine_probe and not refine:
        num = min(num, config.probe_start - done)
      tick = time.perf_counter()
      chi, err, key = chunk(num, refine)
      timed.append((time.perf_counter() - tick, num, key in compiled))
      compiled.add(key)
      chis.append(chi)
      errs.append(err)
      done += num
      bar.update(num)
      bar.set_postfix(chi=f"{float(chi[-1].mean()):.2e}")
      if monitor is not None:
        monitor(done, current())
  seconds = time.perf_counter() - start
  empty = np.zeros((0, batch), np.float32)
  return (np.concatenate(chis) if chis else empty,
          np.concatenate(errs) if errs else empty,
          seconds, steady_seconds(timed, seconds, iterations))


# --- Single-step operators (detector convention; used by the tests) --------


def fourier_projection(psi, amplitudes):
  """Replaces the far-field moduli of exit waves by the measured amplitudes.

  Pi_F(psi) = inverse_far_field(A * far_field(psi) / |far_field(psi)|); where
  far_field(psi) is exactly 0 the result's spectrum is 0.

  Args:
    psi: complex64 [..., h, w] exit waves.
    amplitudes: float32 [..., h, w], detector convention.

  Returns:
    complex64 [..., h, w].
  """
  spectrum = forward.far_field(psi)
  scale = tf.math.divide_no_nan(tf.cast(amplitudes, tf.float32),
                                tf.abs(spectrum))
  return forward.inverse_far_field(spectrum * tf.cast(scale, tf.complex64))


def overlap_projection(psi, probe, layout, object_shape, previous=None,
                       inertia=1e-6):
  """The object that best explains the exit waves.

  O = (sum_j conj(P) psi_j + e O') / (sum_j |P|^2 + e), e = inertia *
  max(sum_j |P|^2), summed per object pixel over the windows covering it.

  Args:
    psi: complex64 [..., N, h, w].
    probe: complex64 [h, w].
    layout: int [N, 4].
    object_shape: (H, W).
    previous: complex64 [..., H, W] previous object O' (None: zeros).
    inertia: relative weight of the previous object.

  Returns:
    complex64 [..., H, W]; O' where no window covers the pixel.
  """
  psi = tf.convert_to_tensor(psi, tf.complex64)
  probe = tf.convert_to_tensor(probe, tf.complex64)
  numerator = forward.stitch(tf.math.conj(probe) * psi, layout, object_shape)
  weight = tf.abs(probe) ** 2 * tf.ones(psi.shape[-3:], tf.float32)
  norm = forward.stitch(weight, layout, object_shape)
  eps = inertia * tf.reduce_max(norm)
  if previous is not None:
    numerator += tf.cast(eps, tf.complex64) * tf.convert_to_tensor(
        previous, tf.complex64)
  return numerator / tf.cast(norm + eps, tf.complex64)


def probe_update(psi, obj, layout, previous=None, inertia=1e-6):
  """The probe that best explains the exit waves.

  P = (sum_j conj(O_j) psi_j + e P') / (sum_j |O_j|^2 + e), e = inertia *
  max(sum_j |O_j|^2).

  Args:
    psi: complex64 [N, h, w].
    obj: complex64 [H, W].
    layout: int [N, 4].
    previous: complex64 [h, w] previous probe P' (None: zeros).
    inertia: relative weight of the previous probe.

  Returns:
    complex64 [h, w].
  """
  psi = tf.convert_to_tensor(psi, tf.complex64)
  windows = forward.extract(tf.convert_to_tensor(obj, tf.complex64), layout,
                            psi.shape[-2:])
  numerator = tf.reduce_sum(tf.math.conj(windows) * psi, axis=-3)
  norm = tf.reduce_sum(tf.abs(windows) ** 2, axis=-3)
  eps = inertia * tf.reduce_max(norm)
  if previous is not None:
    numerator += tf.cast(eps, tf.complex64) * tf.convert_to_tensor(
        previous, tf.complex64)
  return numerator / tf.cast(norm + eps, tf.complex64)


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
    self._ops = WindowOperators(layout, object_shape, (h, w), self.batch)
    # Variables, not constants: `set_amplitudes` swaps in the next batch of
    # scans without retracing the compiled iterations.
    self._amplitudes, self._energy, self._pbound = (
        tf.Variable(v, trainable=False)
        for v in self._amplitude_terms(amplitudes))
    self._support = tf.constant(support_mask((h, w), config.probe_support))
    covered = forward.overlap_count(layout, object_shape, (h, w)).numpy() > 0
    self._covered_f = tf.constant(covered[None].astype(np.float32))
    self._chunk = tf.function(self._iterate, jit_compile=config.jit_compile)
    self._compiled = set()

  def _amplitude_terms(self, amplitudes):
    """(amplitudes in the loop's frame, energy [B], power bound [B, 1])."""
    loop_amplitudes = unshifted_amplitudes(amplitudes)
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
    amplitudes, _, _, _, _ = prepare_inputs(amplitudes, self.probe[:1],
                                            self.layout, self.object_shape)
    if amplitudes.shape != (self.batch, self.count, *self.probe_shape):
      raise UserError(f"amplitudes of shape {amplitudes.shape} do not fit this "
                      f"solver's ({self.batch}, {self.count}, "
                      f"{self.probe_shape[0]}, {self.probe_shape[1]})")
    for variable, value in zip(
        (self._amplitudes, self._energy, self._pbound),
        self._amplitude_terms(amplitudes)):
      variable.assign(value)

  # Pieces of one iteration, all in the unshifted frame.

  def _norm(self, probe):
    weight = tf.abs(probe)[:, None] ** 2 * tf.ones(
        [self.batch, self.count, 1, 1], tf.float32)
    return self._ops.stitch(weight)

  def _object_update(self, psi, probe, norm, previous):
    numerator = self._ops.stitch(tf.math.conj(probe)[:, None] * psi)
    eps = self.config.object_inertia * tf.reduce_max(norm, axis=(1, 2),
                                                     keepdims=True)
    return ((numerator + tf.cast(eps, tf.complex64) * previous) /
            tf.cast(norm + eps, tf.complex64))

  def _probe_update(self, psi, obj, previous):
    windows = self._ops.extract(obj)
    numerator = tf.reduce_sum(tf.math.conj(windows) * psi, axis=1)
    norm = tf.reduce_sum(tf.abs(windows) ** 2, axis=1)
    eps = self.config.probe_inertia * tf.reduce_max(norm, axis=(1, 2),
                                                    keepdims=True)
    probe = ((numerator + tf.cast(eps, tf.complex64) * previous) /
             tf.cast(norm + eps, tf.complex64))
    if self.config.probe_support > 0:
      probe = probe * tf.cast(self._support, tf.complex64)
    return probe

  def _overlap(self, psi, previous, probe, norm, refine):
    if not refine:
      return self._object_update(psi, probe, norm, previous), probe, norm
    obj = previous
    for _ in range(self.config.overlap_iterations):
      obj = self._object_update(psi, probe, norm, obj)
      probe = self._probe_update(psi, obj, probe)
      norm = self._norm(probe)
    return obj, probe, norm

  def _project(self, z_hat):
    """Fourier projection of spectra [B, N, h, w] (power bound when relaxed)."""
    amps = self._amplitudes
    magnitude = tf.abs(z_hat)
    if self.config.fourier_relax > 0:
      deviation = magnitude - amps
      misfit = tf.reduce_mean(deviation ** 2, axis=(2, 3))  # [B, N]
      renorm = tf.sqrt(tf.minimum(
          1.0, tf.math.divide_no_nan(self._pbound, misfit)))
      target = amps + deviation * renorm[:, :, None, None]
    else:
      target = amps
    return z_hat * tf.cast(tf.math.divide_no_nan(target, magnitude),
                           tf.complex64)

  def _iterate(self, state, num, refine):
    """`num` DM iterations; returns the new state and chi, error [num, B]."""
    alpha = tf.constant(self.config.alpha, tf.complex64)
    amps = self._amplitudes

    def body(t, psi, psi_hat, obj, probe, norm, chi, err):
      new_obj, probe, norm = self._overlap(psi, obj, probe, norm, refine)
      phi_hat = tf.signal.fft2d(probe[:, None] * self._ops.extract(new_obj))
      z_hat = (1.0 + alpha) * phi_hat - alpha * psi_hat
      delta = self._project(z_hat) - phi_hat
      psi_hat = psi_hat + delta
      psi = psi + tf.signal.ifft2d(delta)
      change = tf.abs(new_obj - obj) ** 2 * self._covered_f
      size = tf.abs(new_obj) ** 2 * self._covered_f
      chi = chi.write(t, tf.sqrt(tf.math.divide_no_nan(
          tf.reduce_sum(change, axis=(1, 2)), tf.reduce_sum(size, axis=(1, 2)))))
      misfit = tf.reduce_sum((tf.abs(phi_hat) - amps) ** 2, axis=(1, 2, 3))
      err = err.write(t, misfit / self._energy)
      return t + 1, psi, psi_hat, new_obj, probe, norm, chi, err

    chi = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    err = tf.TensorArray(tf.float32, size=num, element_shape=[self.batch])
    out = tf.while_loop(lambda t, *_: t < num, body,
                        (tf.constant(0), *state, chi, err))
    return tuple(out[1:6]), out[6].stack(), out[7].stack()

  def initial_state(self, initial_object=None):
    """(psi, F(psi), object, probe, norm) for a starting object."""
    obj = tf.constant(initial_objects(self.config.init, self.object_shape,
                                      self.batch, self.config.seed,
                                      initial_object))
    probe = tf.constant(self.probe)
    psi = probe[:, None] * self._ops.extract(obj)
    return (psi, tf.signal.fft2d(psi), obj, probe, self._norm(probe))

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
      state[0], chi, err = self._chunk(state[0], tf.constant(num), refine)
      # One compiled function per refinement setting (num is a tensor).
      return chi.numpy(), err.numpy(), refine

    chi, err, seconds, per = run_chunks(
        iterations, config, chunk, lambda: state[0][2].numpy(), self._compiled,
        self.batch, start, monitor)
    result = Reconstruction(
        object=state[0][2].numpy(), probe=state[0][3].numpy(), chi=chi,
        fourier_error=err, seconds=seconds, seconds_per_iteration=per,
        method="dm")
    return squeeze_batch(result, self.batched)


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
