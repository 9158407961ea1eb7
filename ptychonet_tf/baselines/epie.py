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

The steps are the ptychography operator's (`physics.operator.Ptychography`):
`propagate`, `misfit` and `project` (Pi_F in real space), in its unshifted
frame. The epochs run in one XLA-compiled tf.while_loop over positions. The
object [B, H, W] is loop state; position j reads its window with
`physics.windows.Windows.window` (a dynamic slice) and writes its update with
`Windows.add_to_window` (a dynamic update slice, which XLA does in place), so
a step costs little more than its two FFTs (benchmarks/bench_baselines.py
prints the FFT floor next to it).
"""
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf.baselines import base
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
    jit_compile: compile the epochs with XLA (several times faster: without
      it every window update copies the whole object).
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
  jit_compile: bool = True
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.iterations < 0:
      raise UserError(f"ePIE iterations={self.iterations} must be >= 0")
    base.check_init(self.init)
    if self.chunk < 1:
      raise UserError(f"chunk={self.chunk} must be >= 1")
    if not (0 < self.alpha <= 2 and 0 < self.beta <= 2):
      raise UserError(f"ePIE step sizes alpha={self.alpha}, beta={self.beta} "
                      f"must lie in (0, 2]")


class EPIE(base.IterativeReconstructor):
  """ePIE for a batch of scans that share one layout (build once, run often)."""

  name = "epie"
  config_class = EPIEConfig
  unit = "epoch"

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    super().__init__(amplitudes, probe, layout, object_shape, config)
    self._epochs = tf.function(self._run_epochs,
                               jit_compile=self.config.jit_compile)
    self._rng = None

  def _step(self, j, obj, probe, err, refine):
    """Position j's update of the objects [B, H, W] (and probe [B, h, w])."""
    op = self.operator
    window = op.windows.window(obj, j)
    amps = tf.gather(self.amplitudes, j, axis=1)
    psi = probe * window
    spectrum = op.propagate(psi)
    err = err + op.misfit(spectrum[:, None], amps[:, None])
    diff = op.backpropagate(op.modulus_projection(spectrum, amps)) - psi
    probe_power = tf.reduce_max(tf.abs(probe) ** 2, axis=(1, 2), keepdims=True)
    step = tf.cast(self.config.alpha / probe_power, tf.complex64)
    obj = op.windows.add_to_window(obj, j, tf.math.conj(probe) * step * diff)
    if refine:
      window_power = tf.reduce_max(tf.abs(window) ** 2, axis=(1, 2),
                                   keepdims=True)
      step = tf.cast(self.config.beta / tf.maximum(window_power, 1e-30),
                     tf.complex64)
      probe = probe + tf.math.conj(window) * step * diff
    return obj, probe, err

  def _run_epochs(self, obj, probe, orders, refine):
    """Epochs over `orders` int32 [E, N]; returns obj, probe, chi, error [E, B]."""
    epochs = tf.shape(orders)[0]

    def epoch(e, obj, probe, chi, errs):
      order = orders[e]

      def step(k, new_obj, probe, err):
        new_obj, probe, err = self._step(order[k], new_obj, probe, err, refine)
        return k + 1, new_obj, probe, err

      _, new_obj, probe, err = tf.while_loop(
          lambda k, *_: k < self.count, step,
          (tf.constant(0), obj, probe, tf.zeros([self.batch], tf.float32)))
      chi = chi.write(e, self.relative_change(new_obj, obj))
      errs = errs.write(e, err / self._terms["energy"])
      return e + 1, new_obj, probe, chi, errs

    chi = tf.TensorArray(tf.float32, size=epochs, element_shape=[self.batch])
    errs = tf.TensorArray(tf.float32, size=epochs, element_shape=[self.batch])
    _, obj, probe, chi, errs = tf.while_loop(
        lambda e, *_: e < epochs, epoch,
        (tf.constant(0), obj, probe, chi, errs))
    return obj, probe, chi.stack(), errs.stack()

  def initial_state(self, obj, probe):
    # The visiting orders of a run are drawn from config.seed.
    self._rng = np.random.default_rng(self.config.seed)
    return (obj, probe)

  def iterate_chunk(self, state, num, refine):
    orders = np.stack([self._rng.permutation(self.count) for _ in range(num)])
    obj, probe, chi, err = self._epochs(
        state[0], state[1], tf.constant(orders, tf.int32), refine)
    # One trace per refinement setting and chunk length (the orders' shape).
    return (obj, probe), chi.numpy(), err.numpy(), (refine, num)
