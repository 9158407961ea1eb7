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
1 is its exact minimiser, the modulus projection (the same step as DM's). "poisson" is the likelihood sum |Psi|^2 - A^2 log |Psi|^2; its
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

Every step is the ptychography operator's (`physics.operator.Ptychography`,
whose position groups are the batches): `spectra`, `exit_wave_update` (both
likelihoods), `solve_object` / `solve_probe` (the preconditioned
directions) and `misfit`, in its unshifted frame, so an iteration costs the
two FFTs of N patterns that a DM iteration costs. The batches are unrolled
inside one compiled `tf.while_loop` body over iterations.
"""
import dataclasses
from typing import Optional

import numpy as np
from scipy import spatial
import tensorflow as tf

from ptychonet_tf.baselines import base
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.utils.errors import UserError

NOISE_MODELS = operator_lib.NOISE_MODELS
GROUPINGS = ("sparse", "compact")


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
    base.check_init(self.init)
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


# --- The step lengths --------------------------------------------------------


class LSQML(base.IterativeReconstructor):
  """LSQML for a batch of scans that share one layout (build once, run often).

  The operator's position groups are the batches of `position_batches`.
  """

  name = "lsqml"
  config_class = LSQMLConfig

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    super().__init__(amplitudes, probe, layout, object_shape, config)
    self.groups = self.operator.groups
    self._chunk = tf.function(self._iterate,
                              jit_compile=self.config.jit_compile)

  def position_groups(self):
    return position_batches(self.layout, self.config.batch_size,
                            self.config.grouping)

  def batch_update(self, obj, probe, group, refine):
    """One LSQML update of position batch `group` (all its positions at once).

    Args:
      obj: complex64 [B, H, W].
      probe: complex64 [B, h, w].
      group: the batch's index.
      refine: also update the probe (a Python bool).

    Returns:
      (object, probe, misfit float32 [B]): the updated object and probe and
      sum_j || |Psi_j| - A_j ||^2 of the batch before the update.
    """
    op, config = self.operator, self.config
    amplitudes = op.group_slice(self.amplitudes, group)
    views = op.views(obj, group)
    spectra = op.propagate(probe[:, None] * views)
    misfit = op.misfit(spectra, amplitudes)
    chi = op.exit_wave_update(spectra, amplitudes, config.noise_model)
    d_obj = op.solve_object(chi, probe, config.object_reg, group)
    object_term = probe[:, None] * op.views(d_obj, group)
    d_probe = probe_term = None
    if refine:
      d_probe = op.solve_probe(chi, views, config.probe_reg)
      probe_term = d_probe[:, None] * views
    alpha, beta = operator_lib.step_lengths(chi, object_term, probe_term, config.step_reg,
                               config.max_step)
    obj = obj + tf.cast(alpha, tf.complex64)[:, None, None] * d_obj
    if refine:
      probe = probe + tf.cast(beta, tf.complex64)[:, None, None] * d_probe
    return obj, probe, misfit

  def _iterate(self, obj, probe, num, refine):
    """`num` iterations; returns object, probe and chi, error [num, B]."""

    def body(t, obj, probe, chi, err):
      new_obj, misfit = obj, tf.zeros([self.batch], tf.float32)
      for group in range(len(self.groups)):
        new_obj, probe, part = self.batch_update(new_obj, probe, group, refine)
        misfit += part
      chi = chi.write(t, self.relative_change(new_obj, obj))
      err = err.write(t, misfit / self._terms["energy"])
      return t + 1, new_obj, probe, chi, err

    chi, err = self.records(num)
    _, obj, probe, chi, err = tf.while_loop(
        lambda t, *_: t < num, body, (tf.constant(0), obj, probe, chi, err))
    return obj, probe, chi.stack(), err.stack()

  def initial_state(self, obj, probe):
    return (obj, probe)

  def iterate_chunk(self, state, num, refine):
    obj, probe, chi, err = self._chunk(state[0], state[1], tf.constant(num),
                                       refine)
    return (obj, probe), chi.numpy(), err.numpy(), refine
