"""DM and ePIE: compiled iterations against numpy references, recovery on tiny noise-free scans.

Their single steps are the operator's (tests/test_operator.py)."""
import numpy as np
import pytest

from helpers import np_fourier_projection, np_overlap, np_windows

from ptychonet_tf.evaluation import metrics
from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import base
from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import epie
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib


def tiny_scan(seed=0, count=12, step=1.5, size=16):
  """A noise-free scan: pinhole probe [16, 16], Fermat spiral, object ~26x26."""
  rng = np.random.default_rng(seed)
  probe = probe_lib.make_probe((size, size), "pinhole", 0.6)
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(count, step), (size, size))
  obj = (rng.uniform(0.5, 1.0, shape) *
         np.exp(1j * rng.uniform(-1.0, 0.0, shape))).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return amps, probe, layout, shape, obj


# --- numpy references (detector convention, float64) ------------------------


def np_dm(amps, probe, layout, shape, obj, iterations, inertia=1e-6):
  """Classic DM (alpha = 1), known probe; returns the last overlap projection."""
  psi = probe * np_windows(obj, layout)
  for _ in range(iterations):
    obj = np_overlap(psi, probe, layout, shape, obj, inertia)
    phi = probe * np_windows(obj, layout)
    psi = psi + np_fourier_projection(2 * phi - psi, amps) - phi
  return obj


# --- runs ------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_dm_iterations_match_numpy_reference():
  # The loop works in the unshifted frame and carries F(psi) along; it must
  # give the iterates of the textbook algorithm in the detector convention.
  amps, probe, layout, shape, _ = tiny_scan(seed=4)
  start = base.initial_objects("random", shape, 1, seed=5)[0]
  for jit in (True, False):
    config = dm.DMConfig(iterations=3, jit_compile=jit, progress=False)
    got = reconstructors.reconstruct("dm", amps, probe, layout, shape, config,
                            initial_object=start)
    want = np_dm(amps.astype(np.float64), probe.astype(np.complex128), layout,
                 shape, start.astype(np.complex128), 3)
    np.testing.assert_allclose(got.object, want, atol=2e-4)
    assert got.chi.shape == (3,) and got.fourier_error.shape == (3,)


@pytest.mark.slow
def test_chunks_and_probe_start_split_give_the_same_iterates():
  amps, probe, layout, shape, _ = tiny_scan(seed=6)
  runs = [reconstructors.reconstruct("dm", amps, probe, layout, shape,
                            dm.DMConfig(iterations=13, chunk=chunk,
                                        refine_probe=True, probe_start=start,
                                        progress=False))
          for chunk, start in ((13, 5), (4, 5))]
  # Same arithmetic up to float32 rounding (XLA fuses each chunk differently).
  scale = np.abs(runs[0].object).max()
  np.testing.assert_allclose(runs[0].object, runs[1].object, atol=1e-3 * scale)
  np.testing.assert_allclose(runs[0].chi, runs[1].chi, rtol=1e-2, atol=1e-6)


# --- whole runs -----------------------------------------------------------------


@pytest.mark.slow  # 3-3.7 s on an AVX2-only CPU
def test_dm_recovers_a_noise_free_scan_exactly():
  amps, probe, layout, shape, obj = tiny_scan()
  config = dm.DMConfig(iterations=300, init="random", progress=False)
  result = reconstructors.reconstruct("dm", amps, probe, layout, shape, config)
  # The pinhole probe is exactly 0 in the windows' corners: score where it lights.
  mask = metrics.illuminated_region(layout, shape, probe, 0.01)
  scores = metrics.complex_metrics(result.object, obj, mask)
  assert scores["amplitude_psnr"] > 40 and scores["phase_psnr"] > 40, scores
  assert result.fourier_error[-1] < 1e-6
  chi = result.chi[1:]
  blocks = chi[:len(chi) // 6 * 6].reshape(6, -1).mean(axis=1)
  assert np.all(np.diff(blocks) < 0), blocks  # falls on average
  assert result.object.dtype == np.complex64 and result.object.shape == shape


@pytest.mark.slow
def test_dm_batch_equals_separate_runs():
  amps_a, probe, layout, shape, _ = tiny_scan(seed=7)
  amps_b = tiny_scan(seed=8)[0]
  config = dm.DMConfig(iterations=20, progress=False)
  batch = reconstructors.reconstruct("dm", np.stack([amps_a, amps_b]), probe, layout, shape,
                            config)
  assert batch.object.shape == (2,) + shape and batch.chi.shape == (20, 2)
  for i, amps in enumerate((amps_a, amps_b)):
    single = reconstructors.reconstruct("dm", amps, probe, layout, shape, config)
    np.testing.assert_allclose(batch.object[i], single.object, atol=1e-5)


def test_reused_solver_reconstructs_the_new_scans():
  """set_amplitudes: a solver built for one scan and fed another gives what
  a fresh solver gives for that scan (regression: evaluate reused solvers
  across batches while the old amplitudes stayed baked in)."""
  amps_a, probe, layout, shape, _ = tiny_scan(seed=7)
  amps_b = tiny_scan(seed=8)[0]
  config = dm.DMConfig(iterations=20, progress=False)
  solver = dm.DifferenceMap(amps_a, probe, layout, shape, config)
  first = solver.run().object
  solver.set_amplitudes(amps_b)
  reused = solver.run().object
  fresh = dm.DifferenceMap(amps_b, probe, layout, shape, config).run().object
  np.testing.assert_allclose(reused, fresh, atol=1e-5)
  assert np.abs(reused - first).max() > 1e-2
  with pytest.raises(UserError, match="do not fit"):
    solver.set_amplitudes(np.stack([amps_a, amps_b]))


def test_dm_started_at_the_truth_stays_there():
  amps, probe, layout, shape, obj = tiny_scan()
  result = reconstructors.reconstruct("dm", amps, probe, layout, shape,
                             dm.DMConfig(iterations=10, progress=False),
                             initial_object=obj)
  assert result.chi.max() < 1e-4
  mask = metrics.scanned_region(layout, shape)
  np.testing.assert_allclose(result.object[mask], obj[mask], atol=1e-3)


@pytest.mark.slow
def test_probe_refinement_repairs_a_wrong_probe():
  amps, probe, layout, shape, obj = tiny_scan(count=20, step=1.2)
  wrong = probe_lib.make_probe((16, 16), "pinhole", 0.45)  # smaller disk
  base = dict(iterations=150, progress=False, probe_start=5)
  fixed = reconstructors.reconstruct("dm", amps, wrong, layout, shape, dm.DMConfig(**base))
  refined = reconstructors.reconstruct("dm", amps, wrong, layout, shape,
                              dm.DMConfig(refine_probe=True, **base))
  assert refined.fourier_error[-1] < 0.1 * fixed.fourier_error[-1], (
      refined.fourier_error[-1], fixed.fourier_error[-1])
  assert refined.fourier_error[-1] < 1e-3


def test_fourier_relax_leaves_patterns_within_the_bound_alone():
  amps, probe, layout, shape, obj = tiny_scan()
  # Started at the truth, every misfit is ~0 < bound: nothing moves.
  result = reconstructors.reconstruct("dm", amps, probe, layout, shape,
                             dm.DMConfig(iterations=5, fourier_relax=0.05,
                                         progress=False), initial_object=obj)
  assert result.chi.max() < 1e-4


@pytest.mark.parametrize("jit", [True, False])
def test_epie_epoch_matches_numpy_reference(jit):
  amps, probe, layout, shape, _ = tiny_scan(seed=9)
  start = base.initial_objects("random", shape, 1, seed=3)[0]
  config = epie.EPIEConfig(iterations=2, seed=11, progress=False,
                           refine_probe=True, probe_start=1, beta=0.5,
                           jit_compile=jit)
  got = reconstructors.reconstruct("epie", amps, probe, layout, shape, config, initial_object=start)
  rng = np.random.default_rng(11)
  obj = start.astype(np.complex128)
  pr = probe.astype(np.complex128)
  for epoch in range(2):
    for j in rng.permutation(len(layout)):
      t, b, l, r = layout[j]
      window = obj[t:b, l:r].copy()
      psi = pr * window
      diff = np_fourier_projection(psi, amps[j].astype(np.float64)) - psi
      obj[t:b, l:r] += np.conj(pr) / np.max(np.abs(pr) ** 2) * diff
      if epoch >= 1:
        pr = pr + 0.5 * np.conj(window) / np.max(np.abs(window) ** 2) * diff
  np.testing.assert_allclose(got.object, obj, atol=2e-4)
  np.testing.assert_allclose(got.probe, pr, atol=2e-4)


def test_epie_chi_matches_the_objects_of_each_epoch():
  amps, probe, layout, shape, _ = tiny_scan()
  objects = [np.ones(shape, np.complex64)]
  solver = epie.EPIE(amps, probe, layout, shape,
                     epie.EPIEConfig(iterations=4, chunk=2, progress=False))
  chunked = solver.run().chi
  single = epie.EPIE(amps, probe, layout, shape,
                     epie.EPIEConfig(iterations=4, chunk=1, progress=False))
  result = single.run(monitor=lambda done, obj: objects.append(obj[0]))
  mask = metrics.scanned_region(layout, shape)
  want = [np.linalg.norm((b - a)[mask]) / np.linalg.norm(b[mask])
          for a, b in zip(objects[:-1], objects[1:])]
  np.testing.assert_allclose(result.chi, want, rtol=1e-4)
  np.testing.assert_allclose(chunked, want, rtol=1e-4)


def test_epie_recovers_the_well_lit_region():
  amps, probe, layout, shape, obj = tiny_scan()
  result = reconstructors.reconstruct("epie", amps, probe, layout, shape,
                     epie.EPIEConfig(iterations=60, progress=False))
  mask = metrics.illuminated_region(layout, shape, probe, 0.1)
  scores = metrics.complex_metrics(result.object, obj, mask)
  assert scores["amplitude_psnr"] > 30 and scores["phase_psnr"] > 30, scores
  assert result.fourier_error[-1] < 1e-3 * result.fourier_error[0]


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("change, fragment", [
    (lambda a, p, l, s: (a, p[:8], l, s), "probe has shape"),
    (lambda a, p, l, s: (np.where(a > a.max() / 2, np.nan, a), p, l, s), "NaN"),
    (lambda a, p, l, s: (-a, p, l, s), "negative"),
    (lambda a, p, l, s: (a, p, l + 20, s), "falls outside"),
    (lambda a, p, l, s: (a, p, l[:-1], s), "layout has shape"),
])
def test_bad_inputs_raise_user_errors(change, fragment):
  amps, probe, layout, shape, _ = tiny_scan()
  with pytest.raises(UserError, match=fragment):
    dm.DifferenceMap(*change(amps, probe, layout, shape))
  with pytest.raises(UserError, match=fragment):
    epie.EPIE(*change(amps, probe, layout, shape))


def test_bad_settings_raise_user_errors():
  with pytest.raises(UserError, match="init"):
    dm.DMConfig(init="zeros")
  with pytest.raises(UserError, match="iterations"):
    epie.EPIEConfig(iterations=-1)
  amps, probe, layout, shape, _ = tiny_scan()
  with pytest.raises(UserError, match="initial object has shape"):
    reconstructors.reconstruct("dm", amps, probe, layout, shape,
                      dm.DMConfig(iterations=1, progress=False),
                      initial_object=np.ones((5, 5), np.complex64))


@pytest.mark.slow
@pytest.mark.parametrize("refine", [False, True])
def test_dm_position_groups_give_the_one_loop_result(refine):
  """Groups' half-steps side by side = one compiled loop, up to rounding;
  with probe refinement the refining chunks run as one loop (there the
  rounding differences of the first chunk grow, as any would, through the
  object-probe updates: a looser tolerance)."""
  amps, probe, layout, shape, _ = tiny_scan(seed=4)
  runs = []
  for groups in (1, 3):
    config = dm.DMConfig(iterations=12, chunk=4, position_groups=groups,
                         refine_probe=refine, probe_start=4, progress=False)
    runs.append(reconstructors.reconstruct("dm", amps, probe, layout, shape, config))
  one, grouped = runs
  np.testing.assert_allclose(grouped.chi[:4], one.chi[:4], rtol=1e-3,
                             atol=1e-6)
  np.testing.assert_allclose(grouped.fourier_error[:4], one.fourier_error[:4],
                             rtol=1e-3, atol=1e-8)
  tol = 2e-2 if refine else 1e-4
  np.testing.assert_allclose(grouped.object, one.object, atol=tol)
  np.testing.assert_allclose(grouped.probe, one.probe, atol=tol)
  np.testing.assert_allclose(grouped.fourier_error, one.fourier_error,
                             rtol=100 * tol, atol=1e-8)


def test_dm_group_count_is_the_usable_cores():
  assert 1 <= dm.group_count() <= len(machine.usable_cores())


def test_dm_position_groups_must_not_be_negative():
  with pytest.raises(UserError, match="position_groups=-1"):
    dm.DMConfig(position_groups=-1)
