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
