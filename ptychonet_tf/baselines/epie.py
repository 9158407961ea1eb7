"""ePIE (Maiden & Rodenburg, Ultramicroscopy 2009) in TensorFlow.

Notation as in `baselines.dm`: object O complex64 [B, H, W], probe P
complex64 [B, h, w], amplitudes A_j float32 [B, N, h, w]; B scans that share
one layout are processed together, position by position.

One epoch visits the N positions in a random order (seeded); at position j:

  psi    = P * O_j
  psi'   = F^-1[A_j * F(psi) / |F(psi)|]
  O_j   += alpha * conj(P)   / max|P|^2   * (psi' - psi)
  P     += beta  * conj(O_j) / max|O_j|^2 * (psi' - psi)   (when refining; old O_j)

Each epoch records chi = ||O_e - O_{e-1}|| / ||O_e|| over the scanned region
and the Fourier error sum_j || |F(psi_j)| - A_j ||^2 / sum_j ||A_j||^2 of the
exit waves met during the epoch (before their update).

FFT convention: as in the DM loop, amplitudes are ifftshifted and scaled by
sqrt(h*w) once, and each step does a plain fft2d/ifft2d pair of B patterns.
The epochs run in a compiled tf.while_loop over positions; the object lives in
a tf.Variable [H*W, B], so that a window is one gather and its update one
in-place scatter-add (a tensor_scatter_nd_add on a tensor would copy the whole
object at every position): `read_window` and `add_to_window`, through the flat
index of `physics.windows.Windows` (`scatter_indices`). The modulus step is
`common.fourier_update`, as in DM.
"""
import dataclasses
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf.baselines import common
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.utils.errors import UserError


@dataclasses.dataclass(frozen=True)
class EPIEConfig:
  """Settings of an ePIE run.

  Attributes:
    iterations: epochs (one epoch visits every position once).
    alpha: object step size.
    beta: probe step size.
    refine_probe: also update the probe.
    probe_start: first epoch (0-based) that refines the probe.
    init, seed: the initial object (see dm.DMConfig); `seed` also drives the
      random visiting order.
    chunk: epochs per compiled call.
    jit_compile: compile with XLA (slower for ePIE on CPU: the per-position
      scatter into the object is not done in place).
    progress: tqdm bar; None shows it for runs of 50 epochs or more on a
      terminal.
  """
  iterations: int = 100
  alpha: float = 1.0
  beta: float = 1.0
  refine_probe: bool = False
  probe_start: int = 1
  init: str = "ones"
  seed: int = 0
  chunk: int = 5
  jit_compile: bool = False
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.iterations < 0:
      raise UserError(f"ePIE iterations={self.iterations} must be >= 0")
    if self.init not in common.INITS:
      raise UserError(f"initial object {self.init!r} is not one of "
                      f"{common.INITS}")
    if self.chunk < 1:
      raise UserError(f"chunk={self.chunk} must be >= 1")
    if not (0 < self.alpha <= 2 and 0 < self.beta <= 2):
      raise UserError(f"ePIE step sizes alpha={self.alpha}, beta={self.beta} "
                      f"must lie in (0, 2]")


def scatter_indices(windows):
  """The windows' pixels as gather_nd / scatter_nd indices.

  Args:
    windows: physics.windows.Windows of the scan.

  Returns:
    int32 numpy [N, h*w, 1]: row j indexes window j's pixels in objects
    stored as [H*W, B] (`windows.index`, reshaped).
  """
  return windows.index.reshape(windows.count, -1, 1)


def read_window(obj, index, probe_shape):
  """One window of objects stored as [H*W, B].

  Args:
    obj: tf.Variable (or tensor) [H*W, B], any dtype.
    index: int32 [h*w, 1], one row of `scatter_indices`.
    probe_shape: (h, w).

  Returns:
    [B, h, w], the dtype of obj.
  """
  return tf.reshape(tf.transpose(tf.gather_nd(obj, index)),
                    [obj.shape[1], *probe_shape])


def add_to_window(obj, index, update):
  """Adds an update into one window of objects, in place (the adjoint of
  `read_window`; one window of `windows.Windows.stitch`).

  Args:
    obj: tf.Variable [H*W, B].
    index: int32 [h*w, 1], one row of `scatter_indices`.
    update: [B, h, w], the dtype of obj.
  """
  obj.scatter_nd_add(index, tf.transpose(tf.reshape(update,
                                                    [obj.shape[1], -1])))


class EPIE:
  """ePIE for a batch of scans that share one layout (build once, run often).

  Args:
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]).
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: EPIEConfig.
  """

  def __init__(self, amplitudes, probe, layout, object_shape,
               config=EPIEConfig()):
    (amplitudes, probe, layout, object_shape,
     self.batched) = common.prepare_inputs(amplitudes, probe, layout,
                                           object_shape)
    self.config = config
    self.object_shape = object_shape
    self.batch, self.count, h, w = amplitudes.shape
    self.probe_shape = (h, w)
    self.probe = probe
    self._size = object_shape[0] * object_shape[1]
    windows = windows_lib.Windows(layout, object_shape, (h, w))
    self._index = tf.constant(scatter_indices(windows))
    self._amplitudes = tf.constant(common.unshifted_amplitudes(amplitudes))
    self._energy = tf.constant(
        np.maximum(np.sum(np.square(amplitudes, dtype=np.float64),
                          axis=(1, 2, 3)) * h * w, 1e-30).astype(np.float32))
    covered = windows.coverage() > 0
    self._covered_f = tf.constant(covered.reshape(-1, 1).astype(np.float32))
    # The object lives in a variable [H*W, B] so that each position's
    # update is an in-place scatter-add (a tensor would be copied whole).
    self._object = tf.Variable(tf.zeros([self._size, self.batch], tf.complex64),
                               trainable=False)
    self._epochs = tf.function(self._run_epochs,
                               jit_compile=config.jit_compile)
    self._compiled = set()

  def _step(self, j, probe, err, refine):
    """Updates the object variable [H*W, B] (and probe [B, h, w]) at position j."""
    h, w = self.probe_shape
    index = self._index[j]  # [h*w, 1]
    window = read_window(self._object, index, (h, w))
    amps = self._amplitudes[:, j]
    psi = probe * window
    spectrum = tf.signal.fft2d(psi)
    err = err + tf.reduce_sum((tf.abs(spectrum) - amps) ** 2, axis=(1, 2))
    diff = tf.signal.ifft2d(common.fourier_update(spectrum, amps)) - psi
    probe_power = tf.reduce_max(tf.abs(probe) ** 2, axis=(1, 2), keepdims=True)
    step = tf.cast(self.config.alpha / probe_power, tf.complex64)
    add_to_window(self._object, index, tf.math.conj(probe) * step * diff)
    if refine:
      window_power = tf.reduce_max(tf.abs(window) ** 2, axis=(1, 2),
                                   keepdims=True)
      step = tf.cast(self.config.beta / tf.maximum(window_power, 1e-30),
                     tf.complex64)
      probe = probe + tf.math.conj(window) * step * diff
    return probe, err

  def _run_epochs(self, obj, probe, orders, refine):
    """Epochs over `orders` int32 [E, N]; returns obj, probe, chi, error [E, B]."""
    epochs = tf.shape(orders)[0]
    self._object.assign(obj)

    def epoch(e, obj, probe, chi, errs):
      order = orders[e]

      def step(k, probe, err):
        probe, err = self._step(order[k], probe, err, refine)
        return k + 1, probe, err

      with tf.control_dependencies([obj]):
        _, probe, err = tf.while_loop(
            lambda k, *_: k < self.count, step,
            (tf.constant(0), probe, tf.zeros([self.batch], tf.float32)))
      with tf.control_dependencies([err, probe]):
        new_obj = tf.identity(self._object.read_value())
      change = tf.reduce_sum(tf.abs(new_obj - obj) ** 2 * self._covered_f, 0)
      size = tf.reduce_sum(tf.abs(new_obj) ** 2 * self._covered_f, 0)
      chi = chi.write(e, tf.sqrt(tf.math.divide_no_nan(change, size)))
      errs = errs.write(e, err / self._energy)
      return e + 1, new_obj, probe, chi, errs

    chi = tf.TensorArray(tf.float32, size=epochs, element_shape=[self.batch])
    errs = tf.TensorArray(tf.float32, size=epochs, element_shape=[self.batch])
    _, obj, probe, chi, errs = tf.while_loop(
        lambda e, *_: e < epochs, epoch,
        (tf.constant(0), self._object.read_value(), probe, chi, errs))
    return obj, probe, chi.stack(), errs.stack()

  def run(self, initial_object=None, iterations=None, monitor=None):
    """Runs ePIE; returns a common.Reconstruction (chi per epoch).

    Args:
      initial_object: complex [H, W] or [B, H, W] start; None: config.init.
      iterations: overrides config.iterations (epochs).
      monitor: optional callable(done, object) after every compiled chunk,
        object complex64 numpy [B, H, W] (see `dm.DifferenceMap.run`).
    """
    config = self.config
    iterations = config.iterations if iterations is None else int(iterations)
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    obj = common.initial_objects(config.init, self.object_shape, self.batch,
                                 config.seed, initial_object)
    obj = tf.constant(obj.reshape(self.batch, -1).T)  # [H*W, B]
    state = [obj, tf.constant(self.probe)]

    def objects():
      return state[0].numpy().T.reshape((self.batch,) + self.object_shape)

    def chunk(num, refine):
      orders = np.stack([rng.permutation(self.count) for _ in range(num)])
      state[0], state[1], chi, err = self._epochs(
          state[0], state[1], tf.constant(orders, tf.int32), refine)
      # One trace per refinement setting and chunk length (the orders' shape).
      return chi.numpy(), err.numpy(), (refine, num)

    chi, err, seconds, per = common.run_chunks(
        iterations, config, chunk, objects, self._compiled, self.batch, start,
        monitor, unit="epoch")
    result = common.Reconstruction(
        object=objects(), probe=state[1].numpy(), chi=chi, fourier_error=err,
        seconds=seconds, seconds_per_iteration=per, method="epie")
    return common.squeeze_batch(result, self.batched)


def epie(amplitudes, probe, layout, object_shape, config=EPIEConfig(),
         initial_object=None):
  """Reconstructs objects with ePIE; see `EPIE`.

  Returns:
    common.Reconstruction (also importable as dm.Reconstruction).
  """
  return EPIE(amplitudes, probe, layout, object_shape, config).run(
      initial_object)
