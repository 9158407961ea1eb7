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

One iteration is built from the operator's steps
(`physics.operator.Ptychography`): `solve_object` and `solve_probe` are the
overlap projection's object and probe, `illumination` its normaliser
sum_j |P|^2, `spectra` / `backpropagate` the FFTs and `modulus_projection`
Pi_F, all in the operator's unshifted frame (the amplitudes are ifftshifted
and scaled by sqrt(h*w) once).

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
from typing import Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf.baselines import base
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError


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
    base.check_init(self.init)
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


class DifferenceMap(base.IterativeReconstructor):
  """Difference map for a batch of scans that share one layout.

  Build once, `run` as often as needed (`base.Reconstructor`): the compiled
  iterations are traced on the first run and reused (with and without probe
  refinement, and the grouped known-probe loop).

  With a known probe and several position groups (`position_groups`), each
  group's half-step (gather, FFTs, modulus projection, stitch) is a compiled
  function of its own, so that TensorFlow runs the groups side by side; the
  iterates are those of the one-loop iteration up to float rounding.
  """

  name = "dm"
  config_class = DMConfig

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    super().__init__(amplitudes, probe, layout, object_shape, config)
    config = self.config
    self._support = (tf.constant(base.support_mask(self.probe_shape,
                                                   config.probe_support))
                     if config.probe_support > 0 else None)
    # The stitches add the windows in place under XLA, one after another
    # (Windows.stitch "slices"); without XLA every addition would copy the
    # object, so there the segment sum.
    self._stitch = "slices" if config.jit_compile else "segment"
    self._chunk = tf.function(self._iterate, jit_compile=config.jit_compile)
    self._group_steps = [
        tf.function(functools.partial(self._group_step, k),
                    jit_compile=config.jit_compile)
        for k in range(len(self.operator.groups))]
    self._combine = tf.function(self._object_and_chi,
                                jit_compile=config.jit_compile)
    self._grouped_chunk = tf.function(self._iterate_grouped)

  def position_groups(self):
    """Interleaved groups (group k: every groups-th position from the k-th)."""
    groups = min(self.config.position_groups or group_count(), self.count)
    return layouts.interleaved_groups(self.count, groups)

  def amplitude_terms(self, loop_amplitudes):
    """Adds the power bound [B, 1] of the relaxed Fourier projection."""
    terms = super().amplitude_terms(loop_amplitudes)
    power = np.square(loop_amplitudes, dtype=np.float64)
    terms["pbound"] = (0.25 * self.config.fourier_relax ** 2 *
                       power.mean(axis=(1, 2, 3)))[:, None].astype(np.float32)
    return terms

  def _overlap(self, psi, previous, probe, norm, refine):
    """Overlap projection: object (and probe, alternated, when refining)."""
    config, op = self.config, self.operator
    if not refine:
      return (op.solve_object(psi, probe, config.object_inertia, norm=norm,
                              previous=previous, method=self._stitch),
              probe, norm)
    obj = previous
    for _ in range(config.overlap_iterations):
      obj = op.solve_object(psi, probe, config.object_inertia, norm=norm,
                            previous=obj, method=self._stitch)
      probe = op.solve_probe(psi, op.views(obj), config.probe_inertia,
                             previous=probe, support=self._support)
      norm = op.illumination(probe)
    return obj, probe, norm

  def _exit_waves(self, obj, psi_hat, probe, group, amplitudes):
    """The DM update of the exit waves of `group` from the new object.

    Returns the new exit waves' spectra F(psi) and the misfit [B] of the
    estimate's spectra, sum_j || |F(P O_j)| - A_j ||^2.
    """
    pbound = self._terms["pbound"] if self.config.fourier_relax > 0 else None
    delta, misfit = self.operator.difference_map_update(
        obj, psi_hat, probe, amplitudes, self.config.alpha, group, pbound)
    return psi_hat + delta, misfit

  def _iterate(self, state, num, refine):
    """`num` DM iterations; returns the new state and chi, error [num, B]."""
    op = self.operator

    def body(t, psi_hat, obj, probe, norm, chi, err):
      psi = op.backpropagate(psi_hat)
      new_obj, probe, norm = self._overlap(psi, obj, probe, norm, refine)
      psi_hat, misfit = self._exit_waves(new_obj, psi_hat, probe, None,
                                         self.amplitudes)
      chi = chi.write(t, self.relative_change(new_obj, obj))
      err = err.write(t, misfit / self._terms["energy"])
      return t + 1, psi_hat, new_obj, probe, norm, chi, err

    chi, err = self.records(num)
    out = tf.while_loop(lambda t, *_: t < num, body,
                        (tf.constant(0), *state, chi, err))
    return tuple(out[1:5]), out[5].stack(), out[6].stack()

  def _group_step(self, k, obj, psi_hat, probe):
    """Group k's half of a known-probe iteration from the new object.

    Returns its exit waves' spectra, its stitch sum_j conj(P) psi_j and its
    misfit [B].
    """
    op = self.operator
    psi_hat, misfit = self._exit_waves(
        obj, psi_hat, probe, k, op.group_slice(self.amplitudes, k))
    stitched = op.backproject(op.backpropagate(psi_hat), probe, k,
                              method=self._stitch)
    return psi_hat, stitched, misfit

  def _object_and_chi(self, sums, obj, norm):
    """The object update from the groups' stitches, and its chi [B]."""
    new_obj = operator_lib.with_inertia(
        tf.add_n(sums), norm, obj, self.config.object_inertia)
    return new_obj, self.relative_change(new_obj, obj)

  def _iterate_grouped(self, state, num):
    """`num` known-probe iterations, the groups' half-steps side by side.

    The same iteration as `_iterate` without probe refinement: the object
    update sums the groups' stitches; each group then runs its compiled
    half-step, which TensorFlow's inter-op threads run concurrently.
    """
    op = self.operator
    psi_hat, obj, probe, norm = state
    hats = [op.group_slice(psi_hat, k) for k in range(len(op.groups))]
    sums = [op.backproject(op.backpropagate(q), probe, k)
            for k, q in enumerate(hats)]

    def body(t, hats, sums, obj, chi, err):
      new_obj, change = self._combine(sums, obj, norm)
      outs = [step(new_obj, q, probe)
              for step, q in zip(self._group_steps, hats)]
      chi = chi.write(t, change)
      err = err.write(t, tf.add_n([o[2] for o in outs]) /
                      self._terms["energy"])
      return (t + 1, [o[0] for o in outs], [o[1] for o in outs], new_obj,
              chi, err)

    chi, err = self.records(num)
    _, hats, _, obj, chi, err = tf.while_loop(
        lambda t, *_: t < num, body,
        (tf.constant(0), hats, sums, obj, chi, err))
    state = (tf.concat(hats, 1), obj, probe, norm)
    return state, chi.stack(), err.stack()

  def initial_state(self, obj, probe):
    """(F(psi), object, probe, norm) for the starting objects."""
    op = self.operator
    return (op.spectra(obj, probe), obj, probe, op.illumination(probe))

  def state_object(self, state):
    return state[1]

  def state_probe(self, state):
    return state[2]

  def iterate_chunk(self, state, num, refine):
    if refine or len(self.operator.groups) == 1:
      state, chi, err = self._chunk(state, tf.constant(num), refine)
      # One compiled function per refinement setting (num is a tensor).
      return state, chi.numpy(), err.numpy(), refine
    state, chi, err = self._grouped_chunk(state, tf.constant(num))
    return state, chi.numpy(), err.numpy(), "grouped"
