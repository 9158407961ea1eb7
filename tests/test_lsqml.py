"""LSQML: one iteration against a numpy reference, recovery on tiny noise-free scans."""
import numpy as np
import pytest

from helpers import np_fourier_projection, np_stitch, np_windows

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import base
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.utils.errors import UserError


def tiny_scan(seed=0):
  """A noise-free scan: zone-plate probe [8, 8], 3x3 mesh, object 24x24.

  The step (2 px) keeps 9 patterns of 64 pixels well above the lit region's
  unknowns; with 3 px the broad probe leaves too few for a gradient method
  (LSQML and ePIE stall there; DM does not).
  """
  rng = np.random.default_rng(seed)
  probe = probe_lib.make_probe((8, 8), "zone_plate", 0.8)
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 2),
                                                (8, 8), margin=6)
  obj = (rng.uniform(0.5, 1.0, shape) *
         np.exp(1j * rng.uniform(-1.0, 0.0, shape))).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return amps, probe, layout, shape, obj


# --- numpy reference (detector convention, float64) --------------------------


def np_lsqml_iteration(obj, probe, amps, layout, groups, config):
  """One LSQML iteration, object only, Gaussian model, batch by batch."""
  for group in groups:
    rows = layout[group]
    psi = probe * np_windows(obj, rows)
    chi = np_fourier_projection(psi, amps[group]) - psi
    numerator = np_stitch(np.conj(probe) * chi, rows, obj.shape)
    norm = np_stitch(np.broadcast_to(np.abs(probe) ** 2, chi.shape), rows,
                     obj.shape)
    direction = numerator / (norm + config.object_reg * norm.max())
    term = probe * np_windows(direction, rows)
    a11 = np.sum(np.abs(term) ** 2, axis=(1, 2))
    b1 = np.sum(np.real(np.conj(term) * chi), axis=(1, 2))
    a11 = a11 + config.step_reg * a11.mean()
    alpha = np.mean(np.clip(b1 / a11, 0.0, config.max_step))
    obj = obj + alpha * direction
  return obj


# --- single steps -------------------------------------------------------------


def test_position_batches_partition_the_scan():
  _, _, layout, _, _ = tiny_scan()
  for grouping in lsqml.GROUPINGS:
    groups = lsqml.position_batches(layout, 4, grouping)
    assert [len(g) for g in groups] == [3, 3, 3]
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(9))
  assert len(lsqml.position_batches(layout, 9)) == 1
  assert len(lsqml.position_batches(layout, 1)) == 9

  def spread(groups):
    """Mean distance between the window corners within a batch."""
    return np.mean([np.mean(np.hypot(*(layout[g, None, ::2] -
                                       layout[None, g, ::2]).T))
                    for g in groups])

  # A 3x3 mesh in batches of 3: compact ones are rows, sparse ones columns
  # of the serpentine order; sparse batches spread wider.
  assert spread(lsqml.position_batches(layout, 3, "sparse")) > spread(
      lsqml.position_batches(layout, 3, "compact"))


def test_step_lengths_solve_the_least_squares_problem():
  rng = np.random.default_rng(1)
  shape = (2, 3, 6, 5)

  def cplx():
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)

  chi, u, v = cplx(), cplx(), cplx()
  got_o, got_p = operator_lib.step_lengths(chi.astype(np.complex64),
                                    u.astype(np.complex64),
                                    v.astype(np.complex64), step_reg=0.0,
                                    max_step=1e3)
  want = np.zeros(shape[:2] + (2,))
  for b in range(2):
    for j in range(3):
      # Real least squares over the real and imaginary parts.
      a = np.stack([u[b, j].ravel(), v[b, j].ravel()], axis=1)
      a = np.concatenate([a.real, a.imag])
      y = np.concatenate([chi[b, j].ravel().real, chi[b, j].ravel().imag])
      want[b, j] = np.linalg.lstsq(a, y, rcond=None)[0]
  want = np.clip(want, 0, 1e3).mean(axis=1)
  np.testing.assert_allclose(got_o.numpy(), want[:, 0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_p.numpy(), want[:, 1], rtol=1e-4, atol=1e-5)
  # Object only: the 1x1 problem; steps are clipped to [0, max_step].
  alone, none = operator_lib.step_lengths(chi.astype(np.complex64),
                                   u.astype(np.complex64), max_step=0.25,
                                   step_reg=0.0)
  ratio = (np.sum(np.real(np.conj(u) * chi), axis=(2, 3)) /
           np.sum(np.abs(u) ** 2, axis=(2, 3)))
  np.testing.assert_allclose(alone.numpy(),
                             np.clip(ratio, 0, 0.25).mean(axis=1), rtol=1e-4,
                             atol=1e-6)
  assert none is None


@pytest.mark.slow  # 3-3.7 s on an AVX2-only CPU
def test_compiled_iteration_matches_numpy_reference():
  amps, probe, layout, shape, _ = tiny_scan(seed=4)
  start = base.initial_objects("random", shape, 1, seed=5)[0]
  for jit in (True, False):
    config = lsqml.LSQMLConfig(iterations=1, batch_size=4, jit_compile=jit,
                               progress=False)
    got = reconstructors.reconstruct("lsqml", amps, probe, layout, shape, config,
                      initial_object=start)
    groups = lsqml.position_batches(layout, 4, config.grouping)
    want = np_lsqml_iteration(start.astype(np.complex128),
                              probe.astype(np.complex128),
                              amps.astype(np.float64), layout, groups, config)
    np.testing.assert_allclose(got.object, want, atol=1e-4)
    np.testing.assert_array_equal(got.probe, probe)
    assert got.chi.shape == (1,) and got.fourier_error.shape == (1,)
    assert got.method == "lsqml"


# --- whole runs -----------------------------------------------------------------


def test_lsqml_drives_the_misfit_down_and_recovers_the_object():
  amps, probe, layout, shape, obj = tiny_scan()
  config = lsqml.LSQMLConfig(iterations=100, batch_size=3, progress=False)
  result = reconstructors.reconstruct("lsqml", amps, probe, layout, shape, config)
  assert result.fourier_error[-1] < 1e-4 * result.fourier_error[0], (
      result.fourier_error[[0, -1]])
  mask = metrics.illuminated_region(layout, shape, probe, 0.1)
  scores = metrics.complex_metrics(result.object, obj, mask)
  assert scores["amplitude_psnr"] > 35 and scores["phase_psnr"] > 35, scores
  assert result.object.dtype == np.complex64 and result.object.shape == shape


def test_poisson_model_drives_the_misfit_down():
  amps, probe, layout, shape, _ = tiny_scan()
  config = lsqml.LSQMLConfig(iterations=100, batch_size=3, noise_model="poisson",
                             progress=False)
  result = reconstructors.reconstruct("lsqml", amps, probe, layout, shape, config)
  assert np.all(np.isfinite(result.object))
  assert result.fourier_error[-1] < 1e-3 * result.fourier_error[0], (
      result.fourier_error[[0, -1]])


def test_probe_refinement_runs_and_does_not_raise_the_misfit():
  amps, probe, layout, shape, _ = tiny_scan()
  wrong = probe_lib.make_probe((8, 8), "zone_plate", 0.6)
  # Without XLA: two short runs, cheaper than compiling three loops.
  base = dict(iterations=30, batch_size=3, probe_start=5, jit_compile=False,
              progress=False)
  fixed = reconstructors.reconstruct("lsqml", amps, wrong, layout, shape, lsqml.LSQMLConfig(**base))
  refined = reconstructors.reconstruct("lsqml", amps, wrong, layout, shape,
                        lsqml.LSQMLConfig(refine_probe=True, **base))
  assert np.abs(refined.probe - wrong).max() > 1e-3  # the probe moved
  np.testing.assert_array_equal(fixed.probe, wrong)
  # Refinement starts at iteration 5: from there on it never does worse.
  assert refined.fourier_error[-1] <= fixed.fourier_error[-1], (
      refined.fourier_error[-1], fixed.fourier_error[-1])
  assert refined.fourier_error[-1] < refined.fourier_error[5]


def test_batch_of_scans_and_reused_solver_match_single_runs():
  amps_a, probe, layout, shape, _ = tiny_scan(seed=7)
  amps_b = tiny_scan(seed=8)[0]
  config = lsqml.LSQMLConfig(iterations=10, batch_size=3, progress=False)
  batch = reconstructors.reconstruct("lsqml", np.stack([amps_a, amps_b]), probe, layout, shape, config)
  assert batch.object.shape == (2,) + shape and batch.chi.shape == (10, 2)
  solver = lsqml.LSQML(amps_a, probe, layout, shape, config)
  single = [solver.run().object]
  solver.set_amplitudes(amps_b)
  single.append(solver.run().object)
  for i in range(2):
    np.testing.assert_allclose(batch.object[i], single[i], atol=1e-5)
  with pytest.raises(UserError, match="do not fit"):
    solver.set_amplitudes(np.stack([amps_a, amps_b]))


@pytest.mark.slow
def test_acceptance_small_dense_phase_psnr():
  """The issue's check: LSQML-300 from a flat start, known probe, on a
  noise-free small_dense scan of a photograph: >= 45 dB phase PSNR."""
  from ptychonet_tf.data import images  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import geometry as geometry_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import objects  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import simulator  # pylint: disable=g-import-not-at-top
  geometry = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      geometry_lib.ProbeConfig(size=(64, 64), kind="zone_plate", diameter=0.5),
      geometry_lib.ScanConfig(pattern="fermat", count=100, step=4.65)))
  _, pool = images.open_image_pools("default")
  truth = simulator.random_object(pool, geometry.object_shape,
                                  objects.ObjectConfig(),
                                  simulator.scan_rng(0, "test", 0),
                                  images.load_image)
  amps = simulator.Simulator(geometry).amplitudes(truth[None])[0]
  result = reconstructors.reconstruct("lsqml", amps, geometry.probe, geometry.layout,
                       geometry.object_shape,
                       lsqml.LSQMLConfig(iterations=300, progress=False))
  mask = metrics.illuminated_region(geometry.layout, geometry.object_shape,
                                    geometry.probe)
  scores = metrics.complex_metrics(result.object, truth, mask)
  assert scores["phase_psnr"] >= 45, scores


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("settings, fragment", [
    (dict(iterations=0), "iterations=0 must be >= 1"),
    (dict(noise_model="gauss"), "noise model 'gauss' is not one of"),
    (dict(batch_size=0), "batch_size=0 must be >= 1"),
    (dict(grouping="random"), "grouping 'random'"),
    (dict(object_reg=0.0), "object_reg=0.0"),
    (dict(max_step=0.0), "max_step=0.0"),
])
def test_bad_settings_raise_one_line_user_errors(settings, fragment):
  with pytest.raises(UserError, match=fragment) as raised:
    lsqml.LSQMLConfig(**settings)
  assert "\n" not in str(raised.value)


def test_batch_size_above_the_positions_is_a_user_error():
  amps, probe, layout, shape, _ = tiny_scan()
  with pytest.raises(UserError, match=r"batch_size=10 must be in 1\.\.9"):
    lsqml.LSQML(amps, probe, layout, shape,
                lsqml.LSQMLConfig(batch_size=10, progress=False))
