"""The reconstructor family: input checks, the ptychography operator, one run loop, one result.

A reconstruction method is a subclass of `Reconstructor` (or of
`IterativeReconstructor`, for one with iterations) that keeps only its own
update rule; `ptychonet_tf.reconstructors` registers each one by name for the
command line, the evaluation, the demo and the benchmarks.

  solver = SomeMethod(amplitudes, probe, layout, object_shape, config)
  result = solver.run(initial_object=None, iterations=None, monitor=None)
  solver.set_amplitudes(other_scans)   # same geometry: no retracing
  result = solver.run()

Inputs: amplitudes float32 [N, h, w] or [B, N, h, w] in the detector
convention of `physics.forward` (B scans that share one layout are
reconstructed together), a probe complex64 [h, w] (or [B, h, w]), a layout
int32 [N, 4] and the object shape (H, W). The base checks them (one line on a
mismatch), builds the `physics.operator.Ptychography` of the geometry with
the method's position groups, and keeps the scans' amplitudes in the
operator's frame and order in variables, so that `set_amplitudes` swaps in
other scans without retracing the compiled iterations.

`IterativeReconstructor.run` drives the method's compiled chunks
(`iterate_chunk`), with a progress bar, a monitor callback per chunk, and the
steady-state time per iteration; each iteration records
chi = ||O_t - O_{t-1}|| / ||O_t|| over the scanned region and the Fourier
error sum_j || |F(P O_j)| - A_j ||^2 / sum_j ||A_j||^2 of the exit waves the
method met.
"""
import dataclasses
import time

import numpy as np
import tensorflow as tf
import tqdm

from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.utils.errors import UserError

INITS = ("ones", "random")


@dataclasses.dataclass
class Reconstruction:
  """The result of a reconstruction.

  Shapes carry a leading batch axis B only when the input amplitudes did.

  Attributes:
    object: complex64 [(B,) H, W]; unscanned pixels keep the initial object.
    probe: complex64 [(B,) h, w], the refined probe (or the given one).
    chi: float32 [T(, B)], ||O_t - O_{t-1}|| / ||O_t|| per iteration (epoch);
      T = 0 for a method without iterations.
    fourier_error: float32 [T(, B)], relative squared amplitude error.
    seconds: wall time of the whole run, tracing and compilation included.
    seconds_per_iteration: steady-state time of one iteration (epoch) for the
      whole batch, measured over the compiled calls after the first one of
      each kind (the whole run when there is no such call).
    method: the registry name of the method ("dm", "epie", ...).
    network_seconds: time of the learned network's (warm) call, 0 without.
  """
  object: np.ndarray
  probe: np.ndarray
  chi: np.ndarray
  fourier_error: np.ndarray
  seconds: float
  seconds_per_iteration: float
  method: str
  network_seconds: float = 0.0


# --- Inputs ----------------------------------------------------------------


def prepare_inputs(amplitudes, probe, layout, object_shape):
  """Validates the inputs of a reconstruction; raises UserError on a mismatch.

  Args:
    amplitudes: float [N, h, w] or [B, N, h, w], finite and >= 0, not all 0.
    probe: complex [h, w] or [B, h, w].
    layout: int [N, 4], every window inside the object.
    object_shape: (H, W).

  Returns:
    (amplitudes float32 [B, N, h, w], probe complex64 [B, h, w],
     layout int32 [N, 4], object_shape, batched) where batched tells whether
    the amplitudes had a batch axis.
  """
  amplitudes = np.asarray(amplitudes)
  if not (np.issubdtype(amplitudes.dtype, np.floating) or
          np.issubdtype(amplitudes.dtype, np.integer)):
    raise UserError(f"amplitudes have dtype {amplitudes.dtype}; expected "
                    f"real numbers, sqrt(intensity)")
  amplitudes = amplitudes.astype(np.float32)
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
  if not np.any(amplitudes, axis=(1, 2, 3)).all():
    raise UserError("amplitudes are all zero (in at least one scan): no "
                    "photons, nothing to reconstruct")
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


def check_init(init):
  """Raises UserError unless `init` is one of INITS (configs call it)."""
  if init not in INITS:
    raise UserError(f"initial object {init!r} is not one of {INITS}")


def support_mask(probe_shape, fraction):
  """float32 [h, w]: 1 inside the centred disk of radius fraction*min(h,w)/2."""
  h, w = probe_shape
  y = np.arange(h)[:, None] - h // 2
  x = np.arange(w)[None, :] - w // 2
  return (np.hypot(y, x) <= fraction * min(h, w) / 2.0).astype(np.float32)


def relative_change(new_obj, obj, covered):
  """chi = ||O_new - O|| / ||O_new|| over the scanned region, float32 [B].

  Args:
    new_obj, obj: complex64 [B, H, W].
    covered: float32 [1, H, W], 1 where a window covers the pixel.
  """
  change = tf.reduce_sum(tf.abs(new_obj - obj) ** 2 * covered, (1, 2))
  size = tf.reduce_sum(tf.abs(new_obj) ** 2 * covered, (1, 2))
  return tf.sqrt(tf.math.divide_no_nan(change, size))


def progress_bar(total, progress, unit="it"):
  """A tqdm bar; progress None shows it for runs of 50 or more on a terminal."""
  if progress is None:
    disable = None if total >= 50 else True  # None: only on a terminal
  else:
    disable = not progress
  return tqdm.tqdm(total=total, disable=disable, unit=unit, leave=False)


def steady_seconds(timed, total_seconds, iterations):
  """Seconds per iteration from (seconds, count, warm) records of compiled calls."""
  warm = [(s, n) for s, n, was_warm in timed if was_warm]
  if warm:
    return sum(s for s, _ in warm) / sum(n for _, n in warm)
  return total_seconds / max(iterations, 1)


# --- The family ------------------------------------------------------------


class Reconstructor:
  """A reconstruction method for a batch of scans that share one layout.

  Subclasses set `name` (the registry key), `config_class` (a frozen
  dataclass whose fields are the method's settings, each checked in its
  `__post_init__`) and implement `run`; they may override
  `position_groups` (the operator's grouping of positions) and
  `amplitude_terms` (what the method keeps per scan besides the amplitudes).

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]), the known or initial probe.
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: an instance of `config_class` (None: its defaults).

  Attributes:
    config, object_shape, layout, batch (B), count (N), probe_shape (h, w),
    probe complex64 numpy [B, h, w], batched (whether the amplitudes had a
    batch axis), operator (`physics.operator.Ptychography`).
  """

  name = None
  config_class = None
  unit = "it"

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    if config is None:
      config = self.config_class()
    (amplitudes, probe, layout, object_shape,
     self.batched) = prepare_inputs(amplitudes, probe, layout, object_shape)
    self.config = config
    self.object_shape = object_shape
    self.layout = layout
    self.batch, self.count, h, w = amplitudes.shape
    self.probe_shape = (h, w)
    self.probe = probe
    self.operator = operator_lib.Ptychography(
        layout, object_shape, (h, w), self.position_groups())
    self._covered_f = tf.constant(self.operator.covered()[None])
    self._terms = None
    self.set_amplitudes(amplitudes)

  @classmethod
  def variant(cls, config):
    """The class that runs `config` (None: the defaults): this one; a method
    whose settings choose among classes (plug-and-play's data steps) says
    which."""
    del config
    return cls

  def position_groups(self):
    """The operator's position groups (None: one group, layout order)."""
    return None

  def amplitude_terms(self, loop_amplitudes):
    """{name: float32 numpy array} kept per batch of scans.

    Args:
      loop_amplitudes: float32 [B, N, h, w] in the operator's frame and
        order (`Ptychography.loop_amplitudes`).

    Returns:
      "amplitudes" and "energy" [B] (sum of the squared amplitudes, the
      Fourier error's denominator); subclasses add their own.
    """
    energy = np.maximum(
        np.square(loop_amplitudes, dtype=np.float64).sum(axis=(1, 2, 3)),
        1e-30).astype(np.float32)
    return {"amplitudes": loop_amplitudes, "energy": energy}

  def set_amplitudes(self, amplitudes):
    """Takes other scans of the same geometry and batch (no retracing).

    Args:
      amplitudes: float [N, h, w] or [B, N, h, w], the shape the
        reconstructor was built with.

    Raises:
      UserError: another shape, or values that are not amplitudes.
    """
    if self._terms is not None:
      amplitudes = prepare_inputs(amplitudes, self.probe[:1], self.layout,
                                  self.object_shape)[0]
      expected = (self.batch, self.count, *self.probe_shape)
      if amplitudes.shape != expected:
        raise UserError(f"amplitudes of shape {amplitudes.shape} do not fit "
                        f"this reconstructor's {expected}")
    terms = self.amplitude_terms(self.operator.loop_amplitudes(amplitudes))
    if self._terms is None:
      # Variables, not constants: compiled iterations read them, so other
      # scans swap in without retracing.
      self._terms = {k: tf.Variable(v, trainable=False)
                     for k, v in terms.items()}
    else:
      for key, value in terms.items():
        self._terms[key].assign(value)

  @property
  def amplitudes(self):
    """float32 variable [B, N, h, w]: the scans' amplitudes, loop frame."""
    return self._terms["amplitudes"]

  def run(self, initial_object=None, iterations=None, monitor=None):
    """Reconstructs the scans; returns a `Reconstruction`."""
    raise NotImplementedError

  def result(self, obj, probe, chi, error, seconds, per_iteration,
             network_seconds=0.0):
    """The `Reconstruction` of a run (batch axis dropped unless batched)."""
    result = Reconstruction(
        object=np.asarray(obj), probe=np.asarray(probe),
        chi=np.asarray(chi, np.float32), fourier_error=np.asarray(error,
                                                                  np.float32),
        seconds=seconds, seconds_per_iteration=per_iteration, method=self.name,
        network_seconds=network_seconds)
    if not self.batched:
      result.object = result.object[0]
      result.probe = result.probe[0]
      result.chi = result.chi[:, 0]
      result.fourier_error = result.fourier_error[:, 0]
    return result


class IterativeReconstructor(Reconstructor):
  """A method that iterates from a starting object, in compiled chunks.

  Subclasses implement `initial_state(obj, probe)` (tensors of their loop
  state from the starting objects and probes, complex64 [B, H, W] and
  [B, h, w]), `state_object(state)` and `state_probe(state)`, and
  `iterate_chunk(state, num, refine)`, which runs `num` iterations and
  returns (state, chi [num, B], error [num, B], key), key naming the
  compiled function it used (its first call also traces, so its time is
  left out of the steady-state figure). Their config has the fields
  `iterations`, `init`, `seed`, `chunk`, `refine_probe`, `probe_start` and
  `progress`.
  """

  def initial_state(self, obj, probe):
    raise NotImplementedError

  def iterate_chunk(self, state, num, refine):
    raise NotImplementedError

  def state_object(self, state):
    return state[0]

  def state_probe(self, state):
    return state[1]

  def run(self, initial_object=None, iterations=None, monitor=None):
    """Runs the method from `initial_object`.

    Chunks are at most `config.chunk` iterations and end where probe
    refinement starts, so one compiled call never mixes the two kinds.

    Args:
      initial_object: complex [H, W] or [B, H, W] start; None: config.init.
      iterations: overrides config.iterations.
      monitor: optional callable(done, objects) after every compiled chunk,
        objects complex64 numpy [B, H, W] (e.g. to record an error curve;
        its time counts in `seconds` but not in `seconds_per_iteration`).

    Returns:
      Reconstruction (without a batch axis when the amplitudes had none).
    """
    config = self.config
    iterations = config.iterations if iterations is None else int(iterations)
    start = time.perf_counter()
    obj = initial_objects(config.init, self.object_shape, self.batch,
                          config.seed, initial_object)
    state = self.initial_state(tf.constant(obj), tf.constant(self.probe))
    chis, errs, timed = [], [], []
    compiled = getattr(self, "_compiled", None)
    if compiled is None:
      compiled = self._compiled = set()
    done = 0
    with progress_bar(iterations, config.progress, unit=self.unit) as bar:
      while done < iterations:
        refine = config.refine_probe and done >= config.probe_start
        num = min(config.chunk, iterations - done)
        if config.refine_probe and not refine:
          num = min(num, config.probe_start - done)
        tick = time.perf_counter()
        state, chi, err, key = self.iterate_chunk(state, num, refine)
        chi, err = np.asarray(chi), np.asarray(err)
        timed.append((time.perf_counter() - tick, num, key in compiled))
        compiled.add(key)
        chis.append(chi)
        errs.append(err)
        done += num
        bar.update(num)
        bar.set_postfix(chi=f"{float(chi[-1].mean()):.2e}")
        if monitor is not None:
          monitor(done, self.state_object(state).numpy())
    seconds = time.perf_counter() - start
    empty = np.zeros((0, self.batch), np.float32)
    return self.result(
        self.state_object(state).numpy(), self.state_probe(state).numpy(),
        np.concatenate(chis) if chis else empty,
        np.concatenate(errs) if errs else empty, seconds,
        steady_seconds(timed, seconds, iterations))

  def relative_change(self, new_obj, obj):
    """chi [B] of one iteration over the scanned region."""
    return relative_change(new_obj, obj, self._covered_f)

  def records(self, num):
    """Two TensorArrays [num, B] for chi and the Fourier error of a chunk."""
    return (tf.TensorArray(tf.float32, size=num, element_shape=[self.batch]),
            tf.TensorArray(tf.float32, size=num, element_shape=[self.batch]))
