"""What the iterative baselines (DM, ePIE, LSQML) share: inputs, results, driver.

Notation as in `baselines.dm`: object O complex64 [B, H, W], probe P
complex64 [B, h, w], amplitudes A_j float32 [B, N, h, w]; B scans that share
one layout are reconstructed together.

FFT frames. Inputs come in the detector convention of `physics.forward`
(zero frequency at (h//2, w//2), unitary DFT). The solvers' loops work in the
unshifted frame instead: `unshifted_amplitudes` ifftshifts the amplitudes and
scales them by sqrt(h*w) once, so that every step does a plain fft2d/ifft2d.
`fourier_update` is pointwise and works in either frame, given spectra and
amplitudes in the same one.
"""
import dataclasses
import time

import numpy as np
import tensorflow as tf
import tqdm

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.utils.errors import UserError

INITS = ("ones", "random")


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
    method: "dm", "epie" or "lsqml".
  """
  object: np.ndarray
  probe: np.ndarray
  chi: np.ndarray
  fourier_error: np.ndarray
  seconds: float
  seconds_per_iteration: float
  method: str


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


def replacement_amplitudes(solver, amplitudes):
  """Other scans' amplitudes for a built solver, checked against its shape.

  What `set_amplitudes` of DM and LSQML take: float [N, h, w] or
  [B, N, h, w] of the shape the solver was built with.

  Args:
    solver: a solver with `probe`, `layout`, `object_shape`, `batch`,
      `count` and `probe_shape`.
    amplitudes: the new amplitudes.

  Returns:
    float32 [B, N, h, w].

  Raises:
    UserError: another shape.
  """
  amplitudes, _, _, _, _ = prepare_inputs(amplitudes, solver.probe[:1],
                                          solver.layout, solver.object_shape)
  expected = (solver.batch, solver.count, *solver.probe_shape)
  if amplitudes.shape != expected:
    raise UserError(f"amplitudes of shape {amplitudes.shape} do not fit this "
                    f"solver's {expected}")
  return amplitudes


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


# --- The chunked driver ----------------------------------------------------


def progress_bar(total, progress, unit="it"):
  """A tqdm bar, or a disabled one (see dm.DMConfig.progress)."""
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
  """Drives a reconstruction in compiled chunks (shared by DM, ePIE, LSQML).

  Chunks are at most `config.chunk` iterations and end where probe
  refinement starts, so one compiled call never mixes the two kinds.

  Args:
    iterations: iterations (DM) or epochs (ePIE) to run.
    config: dm.DMConfig, epie.EPIEConfig or lsqml.LSQMLConfig (chunk,
      refine_probe, probe_start, progress).
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


def with_inertia(numerator, norm, previous, inertia):
  """(numerator + e * previous) / (norm + e), e = inertia * max(norm).

  The regularised division of DM's object and probe updates and of LSQML's
  preconditioned directions (previous None).

  The max is per leading index, over the last two axes; previous None
  counts as 0. numerator complex64 [..., a, b], norm float32 [..., a, b].
  """
  eps = inertia * tf.reduce_max(norm, axis=(-2, -1), keepdims=True)
  if previous is not None:
    numerator += tf.cast(eps, tf.complex64) * tf.convert_to_tensor(
        previous, tf.complex64)
  return numerator / tf.cast(norm + eps, tf.complex64)


def relative_change(new_obj, obj, covered):
  """chi = ||O_new - O|| / ||O_new|| over the scanned region, float32 [B].

  What DM, ePIE and LSQML record per iteration (epoch).

  Args:
    new_obj, obj: complex64 [B, H, W].
    covered: float32 [1, H, W], 1 where a window covers the pixel.
  """
  change = tf.reduce_sum(tf.abs(new_obj - obj) ** 2 * covered, (1, 2))
  size = tf.reduce_sum(tf.abs(new_obj) ** 2 * covered, (1, 2))
  return tf.sqrt(tf.math.divide_no_nan(change, size))


# --- The Fourier constraint ------------------------------------------------


def fourier_update(spectra, amplitudes, pbound=None):
  """Replaces the moduli of spectra by the measured amplitudes (Pi_F).

  Pointwise: spectra * target / |spectra|, with target = A (the exact
  projection) or, with a power bound, A + (|spectra| - A) * r per pattern,
  r = sqrt(min(1, pbound / mean((|spectra| - A)^2))): a pattern whose mean
  squared misfit is within the bound stays, a worse one moves only down to
  the bound (ptypy's fourier_relax_factor). Where a spectrum is exactly 0 it
  stays 0. Works in any FFT frame, as long as `amplitudes` are in the frame
  of `spectra`.

  Args:
    spectra: complex64 [..., h, w] Fourier transforms of exit waves.
    amplitudes: float32 [..., h, w] measured amplitudes, same frame.
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
  # tf.complex rather than tf.cast: differentiated (the refinement steps),
  # a cast's gradient warns about the imaginary part it drops.
  return spectra * tf.complex(ratio, tf.zeros_like(ratio))
