"""Losses: MSE (eq. 5), DFT loss (eqs. 6-7) and DSE against numpy and physics."""
import numpy as np
import pytest
import tensorflow as tf

from ptychonet_tf.model import losses
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib


@pytest.fixture(scope="module")
def scan():
  """A random object, its true patches and noise-free amplitudes."""
  geo = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=8, step=1.5)))
  rng = np.random.default_rng(0)
  amp = rng.uniform(0.5, 1.0, (2, *geo.object_shape)).astype(np.float32)
  phase = rng.uniform(-1.0, 0.0, (2, *geo.object_shape)).astype(np.float32)
  obj = amp * np.exp(1j * phase)
  measured = forward.diffraction_amplitudes(obj, geo.probe, geo.layout).numpy()
  return dict(geometry=geo, measured=measured,
              amplitude=forward.extract(amp, geo.layout, (16, 16)).numpy(),
              phase=forward.extract(phase, geo.layout, (16, 16)).numpy())


def test_mse_matches_numpy(scan):
  rng = np.random.default_rng(1)
  a, p = scan["amplitude"], scan["phase"]
  a2 = a + rng.normal(0, 0.1, a.shape).astype(np.float32)
  p2 = p + rng.normal(0, 0.2, p.shape).astype(np.float32)
  got = losses.mse_loss(a2, p2, a, p).numpy()
  expected = ((a2 - a) ** 2).mean(axis=(1, 2, 3)) + (
      (p2 - p) ** 2).mean(axis=(1, 2, 3))
  assert got.shape == (2,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_array_equal(losses.mse_loss(a, p, a, p).numpy(), 0)


def test_weighted_mse_ignores_zero_weight_pixels(scan):
  a, p = scan["amplitude"], scan["phase"]
  weights = np.zeros((16, 16), np.float32)
  weights[4:12, 4:12] = 2.0
  a2 = a.copy()
  a2[..., :4, :] += 5.0  # errors only where the weight is 0
  np.testing.assert_allclose(losses.mse_loss(a2, p, a, p, weights).numpy(), 0,
                             atol=1e-7)
  a3 = a + 0.1
  # sum w e^2 / sum w of a uniform error e = e^2, for any weights.
  np.testing.assert_allclose(losses.mse_loss(a3, p, a, p, weights).numpy(),
                             0.01, rtol=1e-4)
  np.testing.assert_allclose(
      losses.patch_loss("mse", {"amplitude": a3, "phase": p},
                        {"amplitude": a, "phase": p}, None, None,
                        weights=weights).numpy(), 0.01, rtol=1e-4)


def test_dft_loss_is_zero_for_the_true_object(scan):
  geo = scan["geometry"]
  loss = losses.dft_loss(scan["amplitude"], scan["phase"], geo.probe,
                         scan["measured"]).numpy()
  assert loss.shape == (2,)
  assert np.all(loss < 1e-10), loss
  # ... and clearly not for a wrong phase.
  wrong = losses.dft_loss(scan["amplitude"], scan["phase"] * 0.5, geo.probe,
                          scan["measured"]).numpy()
  assert np.all(wrong > 1e-4), wrong


def test_dft_loss_matches_numpy_fft(scan):
  geo = scan["geometry"]
  rng = np.random.default_rng(2)
  a = scan["amplitude"] * rng.uniform(0.8, 1.2, scan["amplitude"].shape)
  p = scan["phase"] + rng.normal(0, 0.3, scan["phase"].shape)
  a, p = a.astype(np.float32), p.astype(np.float32)
  psi = geo.probe * a * np.exp(1j * p)
  # The detector convention: centred (fftshift), unitary (/ sqrt(h*w)).
  pred = np.abs(np.fft.fftshift(np.fft.fft2(psi), axes=(-2, -1))) / 16.0
  expected = ((pred - scan["measured"]) ** 2).mean(axis=(1, 2, 3))
  got = losses.dft_loss(a, p, geo.probe, scan["measured"]).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_dft_gradient_is_finite_where_amplitudes_are_zero(scan):
  geo = scan["geometry"]
  # Zero amplitude on the left half of every patch, and on all of pattern 0
  # (whose far field is then exactly 0).
  zeroed = scan["amplitude"].copy()
  zeroed[..., :8] = 0.0
  zeroed[:, 0] = 0.0
  for start in (zeroed, np.zeros_like(zeroed)):
    amplitude = tf.Variable(start)
    phase = tf.Variable(scan["phase"])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(losses.dft_loss(amplitude, phase, geo.probe,
                                           scan["measured"]))
    ga, gp = tape.gradient(loss, [amplitude, phase])
    assert np.all(np.isfinite(ga.numpy())) and np.all(np.isfinite(gp.numpy()))
  amplitude = tf.Variable(zeroed)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(losses.dft_loss(amplitude, scan["phase"], geo.probe,
                                         scan["measured"]))
  ga = tape.gradient(loss, amplitude).numpy()
  assert np.abs(ga[:, 1:, :, :8]).max() > 0  # zeros still get pulled up
  # The naive magnitude sqrt(re^2 + im^2) has a NaN gradient at 0; the
  # guarded one gives 0.
  z = tf.Variable(tf.zeros([4], tf.complex64))
  with tf.GradientTape() as tape:
    naive = tf.reduce_sum(tf.sqrt(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2))
  assert not np.all(np.isfinite(tape.gradient(naive, z).numpy()))
  with tf.GradientTape() as tape:
    safe = tf.reduce_sum(losses.safe_magnitude(z))
  np.testing.assert_array_equal(tape.gradient(safe, z).numpy(), 0)


def test_safe_magnitude_value_and_gradient_elsewhere():
  z = tf.Variable(tf.constant([3 + 4j, -1j, 0.5], tf.complex64))
  with tf.GradientTape() as tape:
    m = losses.safe_magnitude(z)
    total = tf.reduce_sum(m)
  np.testing.assert_allclose(m.numpy(), [5.0, 1.0, 0.5], rtol=1e-6)
  grad = tape.gradient(total, z).numpy()
  # Away from 0 the gradient is tf.abs's.
  with tf.GradientTape() as tape:
    ref = tf.reduce_sum(tf.abs(z))
  np.testing.assert_allclose(grad, tape.gradient(ref, z).numpy(), rtol=1e-6)


def test_dse_is_mse_plus_lambda_dft(scan):
  geo = scan["geometry"]
  a, p = scan["amplitude"] * 0.9, scan["phase"] + 0.1
  mse = losses.mse_loss(a, p, scan["amplitude"], scan["phase"]).numpy()
  dft = losses.dft_loss(a, p, geo.probe, scan["measured"]).numpy()
  dse = losses.dse_loss(a, p, scan["amplitude"], scan["phase"], geo.probe,
                        scan["measured"], dse_lambda=2.5).numpy()
  np.testing.assert_allclose(dse, mse + 2.5 * dft, rtol=1e-5)
  patches = {"amplitude": a, "phase": p}
  truth = {"amplitude": scan["amplitude"], "phase": scan["phase"]}
  np.testing.assert_allclose(
      losses.patch_loss("dse", patches, truth, geo.probe, scan["measured"],
                        2.5).numpy(), dse, rtol=1e-6)
  np.testing.assert_allclose(
      losses.patch_loss("mse", patches, truth, geo.probe,
                        scan["measured"]).numpy(), mse, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown loss"):
    losses.patch_loss("l1", patches, truth, geo.probe, scan["measured"])


def _numpy_deviance(predicted_amplitude, measured_amplitude):
  predicted, measured = predicted_amplitude ** 2, measured_amplitude ** 2
  floor = losses.POISSON_FLOOR * measured.mean(axis=(1, 2, 3), keepdims=True)
  deviance = predicted - measured - measured * (
      np.log(predicted + floor) - np.log(measured + floor))
  return deviance.mean(axis=(1, 2, 3))


def test_physics_misfits_vanish_at_the_truth_and_match_numpy(scan):
  geo = scan["geometry"]
  a, p = scan["amplitude"], scan["phase"]
  for noise in losses.NOISE_MODELS:
    np.testing.assert_allclose(
        losses.dft_loss(a, p, geo.probe, scan["measured"], noise).numpy(), 0,
        atol=1e-6)
  a2, p2 = a * 0.9, p + 0.3 * np.cos(np.arange(16) / 3.0)
  spectra = forward.far_field(geo.probe * (a2 * np.exp(1j * p2)).astype(
      np.complex64)).numpy()
  np.testing.assert_allclose(
      losses.dft_loss(a2, p2, geo.probe, scan["measured"], "poisson").numpy(),
      _numpy_deviance(np.abs(spectra), scan["measured"]), rtol=1e-4)
  np.testing.assert_allclose(
      losses.dft_loss(a2, p2, geo.probe, scan["measured"]).numpy(),
      ((np.abs(spectra) - scan["measured"]) ** 2).mean(axis=(1, 2, 3)),
      rtol=1e-4)
  with pytest.raises(ValueError, match="unknown noise model"):
    losses.dft_loss(a, p, geo.probe, scan["measured"], "laplace")


def test_object_misfit_sees_the_data_not_the_phase_offset(scan):
  geo = scan["geometry"]
  amp = forward.stitch(scan["amplitude"], geo.layout, geo.object_shape)
  count = forward.overlap_count(geo.layout, geo.object_shape, (16, 16))
  amp = (amp / np.maximum(count, 1)).numpy()
  phase = (forward.stitch(scan["phase"], geo.layout, geo.object_shape)
           / np.maximum(count, 1)).numpy()
  for noise in losses.NOISE_MODELS:
    at_truth = losses.object_misfit(amp, phase, geo.probe, geo.layout,
                                    scan["measured"], noise).numpy()
    shifted = losses.object_misfit(amp, phase + 1.3, geo.probe, geo.layout,
                                   scan["measured"], noise).numpy()
    wrong = losses.object_misfit(amp * 0.8, phase, geo.probe, geo.layout,
                                 scan["measured"], noise).numpy()
    assert at_truth.shape == (2,)
    np.testing.assert_allclose(at_truth, 0, atol=1e-6)
    np.testing.assert_allclose(shifted, 0, atol=1e-6)
    assert np.all(wrong > 1e-4), (noise, wrong)


def test_physics_patch_losses_need_no_truth(scan):
  geo = scan["geometry"]
  patches = {"amplitude": scan["amplitude"] * 0.9,
             "phase": scan["phase"] + 0.1}
  truth = {"amplitude": scan["amplitude"], "phase": scan["phase"]}
  physics = losses.patch_loss("physics", patches, None, geo.probe,
                              scan["measured"], noise_model="poisson").numpy()
  np.testing.assert_allclose(
      physics, losses.dft_loss(patches["amplitude"], patches["phase"],
                               geo.probe, scan["measured"], "poisson").numpy(),
      rtol=1e-6)
  mse = losses.mse_loss(patches["amplitude"], patches["phase"],
                        truth["amplitude"], truth["phase"]).numpy()
  np.testing.assert_allclose(
      losses.patch_loss("mse+physics", patches, truth, geo.probe,
                        scan["measured"], 2.0, noise_model="poisson").numpy(),
      mse + 2.0 * physics, rtol=1e-5)
  assert not losses.uses_objects("physics")
  assert losses.uses_objects("mse+physics") and losses.uses_objects("dse")


def test_object_terms_joint_and_parts():
  """The refinement epochs' object term: joint, ln of the amplitude plus the
  phase MSE (offset removed); parts, the mean of their logs; joint+parts,
  the mean of the two; a misfit term adds to each part."""
  from ptychonet_tf.training import evaluator  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  ta = rng.uniform(0.5, 1, (2, 9, 9)).astype(np.float32)
  tp = rng.uniform(-1, 0, (2, 9, 9)).astype(np.float32)
  pa = ta + rng.normal(0, 0.01, ta.shape).astype(np.float32)
  pp = tp + 0.7 + rng.normal(0, 0.1, tp.shape).astype(np.float32)  # + offset
  mask = np.zeros((9, 9), np.float32)
  mask[2:7, 1:8] = 1
  amplitude, phase = (x.numpy() for x in losses.object_mse_parts(
      pa, pp, ta, tp, mask))
  lit = mask.astype(bool)
  np.testing.assert_allclose(amplitude, ((pa - ta) ** 2)[:, lit].mean(1),
                             rtol=1e-5)
  dp = (pp - tp)[:, lit]  # less the amplitude-weighted best offset:
  dp += np.angle(((pa * ta)[:, lit] * np.exp(-1j * dp)).sum(1, keepdims=True))
  np.testing.assert_allclose(phase, (np.angle(np.exp(1j * dp)) ** 2).mean(1),
                             rtol=1e-4)
  np.testing.assert_allclose(losses.object_mse(pa, pp, ta, tp, mask),
                             amplitude + phase, rtol=1e-6)
  batch = {"object_amplitude": ta, "object_phase": tp}
  final = {"amplitude": pa, "phase": pp}
  weight, floor = evaluator.OBJECT_LOG_WEIGHT, evaluator.OBJECT_MSE_FLOOR
  misfit = np.array([1e-3, 2e-3], np.float32)
  for name, extra in (("mse", 0.0), ("mse+physics", 0.5 * misfit)):
    for log, want in (
        ("joint", weight * np.log(amplitude + phase + extra + floor)),
        ("parts", weight * (np.log(amplitude + extra + floor) +
                            np.log(phase + extra + floor)) / 2),
        ("joint+parts", weight * (
            np.log(amplitude + phase + extra + floor) / 2 +
            (np.log(amplitude + extra + floor) +
             np.log(phase + extra + floor)) / 4))):
      spec = losses.LossSpec(name, dse_lambda=0.5, object_log=log)
      got = evaluator.object_term(batch, spec, final, lambda: mask,
                                  lambda: misfit)
      np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=(name, log))
  # The data misfit alone ("physics") has one part whatever object_log says.
  spec = losses.LossSpec("physics", object_log="parts")
  np.testing.assert_allclose(
      evaluator.object_term(batch, spec, final, lambda: mask, lambda: misfit),
      weight * np.log(misfit + floor), rtol=1e-5)
