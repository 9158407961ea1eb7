"""The ptychography operator against float64 numpy references.

One set of tests for the physics every solver and the refinement call:
adjointness of the exit waves and the back-projection, the misfit's gradient
by finite differences, the modulus projection (exact, relaxed, idempotent),
the Poisson update, the object and probe solutions, the illumination, the
loop frame and the position groups.
"""
import numpy as np
import pytest
import tensorflow as tf

from helpers import (np_far, np_fourier_projection, np_overlap, np_stitch,
                     np_windows)

from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.physics import probe as probe_lib

SIZE = 16


def tiny_geometry(count=12, step=1.5):
  probe = probe_lib.make_probe((SIZE, SIZE), "pinhole", 0.6)
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(count, step), (SIZE, SIZE))
  return probe.astype(np.complex64), layout, shape


def complex_normal(rng, shape):
  return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def to_loop(amps_or_spectra):
  """Detector frame -> the operator's frame (ifftshift, times sqrt(h*w))."""
  h, w = amps_or_spectra.shape[-2:]
  return np.fft.ifftshift(amps_or_spectra, axes=(-2, -1)) * np.sqrt(h * w)


def np_misfit(obj, probe, layout, loop_amps):
  """sum_j || |fft2(P O_j)| - A_j ||^2 in float64 (the loop frame)."""
  spectra = np.fft.fft2(probe * np_windows(obj, layout))
  return float(np.sum((np.abs(spectra) - loop_amps) ** 2))


def test_exit_waves_and_backproject_are_adjoint():
  probe, layout, shape = tiny_geometry()
  op = operator_lib.Ptychography(layout, shape, probe.shape)
  rng = np.random.default_rng(0)
  obj = complex_normal(rng, (1, *shape)).astype(np.complex64)
  waves = complex_normal(rng, (1, len(layout), SIZE, SIZE)).astype(
      np.complex64)
  forward = np.vdot(op.exit_waves(obj, probe).numpy().astype(np.complex128),
                    waves)
  adjoint = np.vdot(obj.astype(np.complex128),
                    op.backproject(waves, probe).numpy())
  np.testing.assert_allclose(forward, adjoint, rtol=1e-5)
  # And against numpy: P O_j for every window.
  np.testing.assert_allclose(op.exit_waves(obj, probe).numpy()[0],
                             probe * np_windows(obj[0], layout), rtol=1e-6)


def test_misfit_gradient_matches_finite_differences():
  """dL = 2 Re <G, dO> with G = -h*w * backproject(exit_wave_update), the
  gradient the refinement and LSQML step along (float64 differences)."""
  probe, layout, shape = tiny_geometry()
  op = operator_lib.Ptychography(layout, shape, probe.shape)
  rng = np.random.default_rng(1)
  truth = np.exp(1j * rng.uniform(-1, 0, shape))
  amps = np.abs(np_far(probe * np_windows(truth, layout)))
  loop_amps = to_loop(amps)
  obj = truth * (1 + 0.2 * complex_normal(rng, shape))
  spectra = op.spectra(obj[None].astype(np.complex64), probe)
  chi = op.exit_wave_update(spectra, loop_amps[None].astype(np.float32))
  gradient = -SIZE * SIZE * op.backproject(chi, probe).numpy()[0]
  np.testing.assert_allclose(
      op.misfit(spectra, loop_amps[None].astype(np.float32)).numpy()[0],
      np_misfit(obj, probe, layout, loop_amps), rtol=1e-4)
  for seed in range(3):
    direction = complex_normal(np.random.default_rng(10 + seed), shape)
    t = 1e-6
    numeric = (np_misfit(obj + t * direction, probe, layout, loop_amps) -
               np_misfit(obj - t * direction, probe, layout, loop_amps)) / (2 * t)
    analytic = 2 * np.real(np.vdot(gradient, direction))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3)


def test_projection_matches_numpy_and_is_idempotent():
  rng = np.random.default_rng(2)
  psi = complex_normal(rng, (3, 16, 12))
  amps = rng.uniform(0, 2, size=(3, 16, 12))
  layout = np.array([[0, 16, 0, 12]])
  op = operator_lib.Ptychography(layout, (16, 12), (16, 12))
  loop_amps = to_loop(amps).astype(np.float32)
  out = op.project(psi.astype(np.complex64), loop_amps).numpy()
  np.testing.assert_allclose(out, np_fourier_projection(psi, amps), atol=2e-5)
  np.testing.assert_allclose(np.abs(np_far(out)), amps, atol=2e-5)
  again = op.project(out, loop_amps).numpy()
  np.testing.assert_allclose(again, out, atol=2e-5)


def test_relaxed_modulus_projection_matches_numpy():
  """The power-bound projection on batched spectra [B, N, h, w], bound [B, 1]."""
  rng = np.random.default_rng(4)
  shape = (2, 3, 8, 6)
  spectra = complex_normal(rng, shape)
  amps = rng.uniform(0, 2, size=shape)
  pbound = np.array([[0.1], [50.0]])  # scan 0 moves, scan 1 is within it
  magnitude = np.abs(spectra)
  deviation = magnitude - amps
  misfit = (deviation ** 2).mean(axis=(2, 3))
  renorm = np.sqrt(np.minimum(1.0, pbound / misfit))
  want = spectra * (amps + deviation * renorm[..., None, None]) / magnitude
  got = operator_lib.modulus_projection(
      spectra.astype(np.complex64), amps.astype(np.float32),
      pbound.astype(np.float32)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[1], spectra[1], rtol=1e-5, atol=1e-5)
  exact = operator_lib.modulus_projection(spectra.astype(np.complex64),
                                          amps.astype(np.float32)).numpy()
  np.testing.assert_allclose(np.abs(exact), amps, rtol=1e-5, atol=1e-5)


def test_poisson_update_matches_numpy_and_vanishes_at_the_data():
  rng = np.random.default_rng(5)
  spectra = complex_normal(rng, (2, 8, 8))
  amps = rng.uniform(0.1, 2, size=(2, 8, 8))
  op = operator_lib.Ptychography(np.array([[0, 8, 0, 8]]), (8, 8), (8, 8))
  got = op.exit_wave_update(spectra.astype(np.complex64),
                            amps.astype(np.float32), "poisson").numpy()
  power, data = np.abs(spectra) ** 2, amps ** 2
  ratio = np.maximum(1 - data / power, -operator_lib.POISSON_CLIP)
  step = ((ratio * (power - data)).sum((1, 2), keepdims=True) /
          (ratio ** 2 * (power + data)).sum((1, 2), keepdims=True))
  np.testing.assert_allclose(got, np.fft.ifft2(-step * ratio * spectra),
                             rtol=1e-4, atol=1e-6)
  at_data = spectra * amps / np.abs(spectra)
  for model in operator_lib.NOISE_MODELS:
    exact = op.exit_wave_update(at_data.astype(np.complex64),
                                amps.astype(np.float32), model).numpy()
    np.testing.assert_allclose(exact, 0, atol=1e-5)
  with pytest.raises(ValueError, match="noise model"):
    op.exit_wave_update(spectra.astype(np.complex64), amps, "laplace")


def test_poisson_update_gradient_is_finite_where_the_model_is_nearly_dark():
  """Where |Psi|^2 is far below A^2 the ratio is clipped, and the plain
  A^2 / |Psi|^2's gradient (A^2 / |Psi|^4) overflowed: zero times inf gave
  NaN gradients to everything learned through the update."""
  rng = np.random.default_rng(7)
  spectra = complex_normal(rng, (2, 8, 8)).astype(np.complex64)
  spectra[0, 3, 3] = 1e-15  # dark model pixels, bright data
  spectra[1, 0, 0] = 1e-25j
  spectra[1, 5, 2] = 0.0
  amps = rng.uniform(0.5, 2, size=(2, 8, 8)).astype(np.float32)
  op = operator_lib.Ptychography(np.array([[0, 8, 0, 8]]), (8, 8), (8, 8))
  variable = tf.Variable(spectra)
  with tf.GradientTape() as tape:
    chi = op.exit_wave_update(variable, amps, "poisson")
    loss = tf.reduce_sum(tf.abs(chi - 0.1) ** 2)
  grad = tape.gradient(loss, variable).numpy()
  assert np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0
  got = chi.numpy()
  power, data = np.abs(spectra.astype(np.complex128)) ** 2, amps ** 2
  ratio = np.maximum(1 - data / np.maximum(power, 1e-300),
                     -operator_lib.POISSON_CLIP)
  step = ((ratio * (power - data)).sum((1, 2), keepdims=True) /
          (ratio ** 2 * (power + data)).sum((1, 2), keepdims=True))
  np.testing.assert_allclose(got, np.fft.ifft2(-step * ratio * spectra),
                             rtol=1e-4, atol=1e-6)


def test_solve_object_matches_numpy_and_recovers_consistent_waves():
  """Batched: two scans with different probes and previous objects."""
  probe, layout, shape = tiny_geometry()
  op = operator_lib.Ptychography(layout, shape, probe.shape)
  rng = np.random.default_rng(6)
  psi = complex_normal(rng, (2, len(layout), SIZE, SIZE))
  previous = complex_normal(rng, (2, *shape))
  probes = np.stack([probe, 0.5 * probe.conj()]).astype(np.complex64)
  out = op.solve_object(psi.astype(np.complex64), probes, 1e-3,
                        previous=previous.astype(np.complex64)).numpy()
  norm = op.illumination(probes).numpy()
  for b in range(2):
    want = np_overlap(psi[b], probes[b].astype(np.complex128), layout, shape,
                      previous[b], 1e-3)
    np.testing.assert_allclose(out[b], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        norm[b], np_stitch(np.broadcast_to(np.abs(probes[b]) ** 2,
                                           psi[b].shape), layout, shape),
        rtol=1e-5, atol=1e-6)
  obj = np.exp(1j * rng.uniform(-1, 0, shape)).astype(np.complex64)
  consistent = (probe * np_windows(obj, layout))[None]
  np.testing.assert_allclose(
      op.solve_object(consistent, probe, 1e-6, previous=obj[None]).numpy()[0],
      obj, atol=1e-5)
  # Every stitch method gives the same solution.
  for method in ("scatter", "segment", "gather"):
    np.testing.assert_allclose(
        op.solve_object(psi.astype(np.complex64), probes, 1e-3,
                        previous=previous.astype(np.complex64),
                        method=method).numpy(), out, rtol=1e-4, atol=1e-5)


def test_solve_probe_matches_numpy_and_recovers_the_probe():
  probe, layout, shape = tiny_geometry()
  op = operator_lib.Ptychography(layout, shape, probe.shape)
  rng = np.random.default_rng(3)
  obj = np.exp(1j * rng.uniform(-1, 0, shape)).astype(np.complex64)
  psi = complex_normal(rng, (1, len(layout), SIZE, SIZE))
  previous = complex_normal(rng, (1, SIZE, SIZE))
  views = op.views(obj[None])
  out = op.solve_probe(psi.astype(np.complex64), views, 1e-2,
                       previous=previous.astype(np.complex64)).numpy()[0]
  np_views = np_windows(obj.astype(np.complex128), layout)
  norm = (np.abs(np_views) ** 2).sum(0)
  eps = 1e-2 * norm.max()
  want = ((np.conj(np_views) * psi[0]).sum(0) + eps * previous[0]) / (
      norm + eps)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  support = np.zeros((SIZE, SIZE), np.float32)
  support[4:12, 4:12] = 1
  masked = op.solve_probe(psi.astype(np.complex64), views, 1e-2,
                          previous=previous.astype(np.complex64),
                          support=support).numpy()[0]
  np.testing.assert_allclose(masked, want * support, rtol=1e-4, atol=1e-5)
  exact = op.solve_probe(probe * views, views, 1e-6,
                         previous=probe[None]).numpy()[0]
  np.testing.assert_allclose(exact, probe, atol=1e-5)


def test_loop_frame_and_groups():
  probe, layout, shape = tiny_geometry()
  groups = layouts.interleaved_groups(len(layout), 3)
  op = operator_lib.Ptychography(layout, shape, probe.shape, groups)
  rng = np.random.default_rng(7)
  amps = rng.uniform(0, 1, (2, len(layout), SIZE, SIZE)).astype(np.float32)
  loop = op.loop_amplitudes(amps)
  np.testing.assert_allclose(loop, to_loop(amps[:, op.order]), rtol=1e-6)
  np.testing.assert_allclose(op.loop_amplitudes_tensor(amps).numpy(), loop,
                             rtol=1e-6)
  obj = complex_normal(rng, (2, *shape)).astype(np.complex64)
  everything = op.spectra(obj, probe).numpy()
  waves = complex_normal(rng, (2, len(layout), SIZE, SIZE)).astype(
      np.complex64)
  for k, members in enumerate(groups):
    np.testing.assert_allclose(op.spectra(obj, probe, k).numpy(),
                               op.group_slice(everything, k), rtol=1e-5,
                               atol=1e-4)
    want = np.stack([np.fft.fft2(probe * np_windows(o, layout[members]))
                     for o in obj])
    np.testing.assert_allclose(op.group_slice(everything, k), want,
                               rtol=1e-4, atol=1e-3)
  # The groups' back-projections sum to the whole one.
  total = sum(op.backproject(op.group_slice(waves, k), probe, k).numpy()
              for k in range(3))
  np.testing.assert_allclose(total, op.backproject(waves, probe).numpy(),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="partition"):
    operator_lib.Ptychography(layout, shape, probe.shape, [[0, 1], [1, 2]])


def test_with_inertia_keeps_unlit_pixels():
  numerator = tf.constant([[[1 + 1j, 0]]], tf.complex64)
  norm = tf.constant([[[2.0, 0.0]]])
  previous = tf.constant([[[5 + 0j, 7 + 0j]]], tf.complex64)
  out = operator_lib.with_inertia(numerator, norm, previous, 0.5).numpy()
  np.testing.assert_allclose(out, [[[(1 + 1j + 5) / 3, 7]]], rtol=1e-6)
