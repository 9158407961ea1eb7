"""PSNR / SSIM with phase-offset removal on a region, and the raw (paper) convention."""
import numpy as np
import pytest

from ptychonet_tf.evaluation import metrics


def _object(seed=0, shape=(32, 32)):
  rng = np.random.default_rng(seed)
  amplitude = rng.uniform(0.5, 1.0, shape)
  phase = rng.uniform(-1.0, 0.0, shape)
  return amplitude * np.exp(1j * phase)


def test_psnr_of_a_known_error():
  truth = np.zeros((16, 16))
  truth[0, 0] = 1.0  # data range 1
  estimate = truth + 0.1  # MSE 0.01 -> 20 dB
  assert metrics.psnr(estimate, truth) == pytest.approx(20.0, abs=1e-9)
  assert metrics.psnr(truth, truth) == float("inf")
  assert metrics.psnr(estimate, truth, data_range=2.0) == pytest.approx(
      20.0 + 20 * np.log10(2.0), abs=1e-9)


def test_constant_truth_uses_its_magnitude_as_the_range():
  # The amplitude of a phase-only object: 0.5 everywhere, up to float32 noise.
  truth = np.full((16, 16), 0.5, np.float32)
  truth[3, 3] = np.float32(0.5) + np.float32(3e-8)
  estimate = truth + 0.05  # MSE 0.0025, range 0.5 -> 20 dB
  assert metrics.default_range(truth) == pytest.approx(0.5, rel=1e-6)
  assert metrics.psnr(estimate, truth) == pytest.approx(20.0, abs=1e-4)
  assert 0.9 < metrics.ssim(estimate, truth) <= 1.0
  with pytest.raises(ValueError, match="data range is 0"):
    metrics.psnr(np.ones((8, 8)), np.zeros((8, 8)))


def test_constant_phase_offset_is_removed():
  truth = _object()
  estimate = truth * np.exp(1j * 0.7)
  scores = metrics.complex_metrics(estimate, truth)
  assert scores["phase_offset"] == pytest.approx(-0.7, abs=1e-9)
  assert scores["amplitude_psnr"] > 200 and scores["phase_psnr"] > 200
  assert scores["amplitude_ssim"] == pytest.approx(1.0)
  assert scores["phase_ssim"] == pytest.approx(1.0)
  raw = metrics.paper_metrics(estimate, truth)
  assert raw["amplitude_psnr"] > 200  # |O| is offset-free
  assert raw["phase_psnr"] == pytest.approx(
      10 * np.log10(np.ptp(np.angle(truth)) ** 2 / 0.7 ** 2), abs=1e-6)


def test_phase_is_compared_modulo_two_pi():
  truth = np.exp(1j * np.full((16, 16), np.pi - 0.01))
  truth[0, 0] = np.exp(1j * (np.pi - 0.5))  # a non-zero data range
  estimate = truth * np.exp(1j * 0.02)  # wraps past pi to about -pi
  aligned = metrics.aligned_phase(estimate, truth)
  np.testing.assert_allclose(aligned, np.angle(truth) + 0.02, atol=1e-12)


def test_a_zero_estimate_does_not_score_the_true_phase():
  # A diverged model that returned O = 0 scored phase PSNR inf, SSIM 1.
  truth = _object(4)
  scores = metrics.complex_metrics(np.zeros_like(truth), truth)
  assert scores["phase_psnr"] == pytest.approx(metrics.psnr(
      np.zeros(truth.shape), np.angle(truth)), abs=1e-9)
  assert scores["phase_psnr"] < 10 and scores["phase_ssim"] < 0.5
  # A zero pixel has phase 0; the others keep theirs.
  estimate = truth.copy()
  estimate[0, 0] = 0
  aligned = metrics.aligned_phase(estimate, truth)
  assert aligned[0, 0] == pytest.approx(0.0, abs=1e-12)
  np.testing.assert_allclose(aligned.ravel()[1:], np.angle(truth).ravel()[1:],
                             atol=1e-12)


def test_region_limits_psnr_ssim_and_the_offset_fit():
  truth = _object(1)
  mask = np.zeros(truth.shape, bool)
  mask[4:28, 4:28] = True
  estimate = truth * np.exp(1j * 0.3)
  estimate[~mask] = 5.0  # garbage outside the region only
  scores = metrics.complex_metrics(estimate, truth, mask)
  assert scores["phase_offset"] == pytest.approx(-0.3, abs=1e-9)
  assert scores["amplitude_psnr"] > 200 and scores["phase_psnr"] > 200
  assert scores["amplitude_ssim"] == pytest.approx(1.0)
  assert metrics.complex_metrics(estimate, truth)["amplitude_psnr"] < 10


def test_ssim_drops_with_noise_and_bad_masks_are_rejected():
  truth = np.abs(_object(2))
  noisy = truth + np.random.default_rng(3).normal(0, 0.1, truth.shape)
  assert metrics.ssim(noisy, truth) < 0.9
  with pytest.raises(ValueError, match="selects no pixels"):
    metrics.psnr(noisy, truth, mask=np.zeros(truth.shape, bool))
  with pytest.raises(ValueError, match="mask has shape"):
    metrics.ssim(noisy, truth, mask=np.ones((3, 3), bool))


def test_scanned_and_illuminated_regions():
  layout = np.array([[0, 4, 0, 4], [2, 6, 3, 7]], np.int32)
  mask = metrics.scanned_region(layout, (8, 8))
  assert mask.sum() == 16 + 16 - 2  # two 4x4 windows sharing 2 pixels
  assert metrics.scanned_region(layout, (8, 8), erode=1).sum() < mask.sum()
  probe = np.zeros((4, 4))
  probe[1:3, 1:3] = 1.0
  lit = metrics.illuminated_region(layout, (8, 8), probe, 0.5)
  assert lit.sum() == 8 and np.all(mask[lit])


def test_fourier_error_and_first_reaching():
  from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  obj = np.exp(1j * rng.uniform(-1, 0, (24, 24))).astype(np.complex64)
  probe = (rng.normal(size=(16, 16)) + 1j).astype(np.complex64)
  layout = np.array([[0, 16, 0, 16], [8, 24, 8, 24], [0, 16, 8, 24]])
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  assert metrics.fourier_error(obj, probe, layout, amps) < 1e-10
  # A constant phase is invisible to the data; a scaled object is not:
  # |F(P 0.9 O)| = 0.9 A, so the error is 0.1^2.
  assert metrics.fourier_error(obj * 1j, probe, layout, amps) < 1e-10
  assert metrics.fourier_error(0.9 * obj, probe, layout, amps) == \
      pytest.approx(0.01, rel=1e-4)
  assert metrics.first_reaching([0.5, 0.3, 0.2, 0.25], 0.3) == 2
  assert metrics.first_reaching([0.5, 0.4], 0.3) is None


def _frc_reference(first, second, ring_width):
  """The FRC by explicit loops over the DFT's frequencies (float64)."""
  height, width = first.shape
  size = min(height, width)
  rings = size // (2 * ring_width)
  f1, f2 = np.fft.fft2(first), np.fft.fft2(second)
  cross, p1, p2 = np.zeros(rings), np.zeros(rings), np.zeros(rings)
  for i in range(height):
    for j in range(width):
      ky = (i if i < (height + 1) // 2 else i - height) * size / height
      kx = (j if j < (width + 1) // 2 else j - width) * size / width
      ring = int(np.floor(np.hypot(ky, kx) / ring_width))
      if ring < rings:
        cross[ring] += (f1[i, j] * np.conj(f2[i, j])).real
        p1[ring] += abs(f1[i, j]) ** 2
        p2[ring] += abs(f2[i, j]) ** 2
  return cross / np.sqrt(p1 * p2)


@pytest.mark.parametrize("shape, ring_width, complex_images", [
    ((24, 24), 1, False), ((20, 26), 2, True)])
def test_fourier_ring_correlation_matches_a_loop(shape, ring_width,
                                                 complex_images):
  rng = np.random.default_rng(3)
  first = rng.normal(size=shape)
  second = first + 0.7 * rng.normal(size=shape)
  if complex_images:
    first = first + 1j * rng.normal(size=shape)
    second = second + 1j * rng.normal(size=shape)
  frequencies, frc = metrics.fourier_ring_correlation(first, second,
                                                      ring_width)
  np.testing.assert_allclose(frc, _frc_reference(first, second, ring_width),
                             atol=1e-12)
  size = min(shape)
  np.testing.assert_allclose(frequencies,
                             (np.arange(len(frc)) + 0.5) * ring_width / size)
  _, same = metrics.fourier_ring_correlation(first, first, ring_width)
  np.testing.assert_allclose(same, 1.0, atol=1e-12)


def test_frc_crossing_interpolates_and_saturates():
  frequencies = np.array([0.1, 0.2, 0.3, 0.4])
  assert metrics.frc_crossing(frequencies, [1.0, 0.8, 0.4, 0.1]) == (
      pytest.approx(0.275))
  assert metrics.frc_crossing(frequencies, [1.0, 0.9, 0.8, 0.7]) == 0.4
  assert metrics.frc_crossing(frequencies, [0.2, 0.9, 0.8, 0.7]) == 0.1


def test_register_undoes_a_subpixel_shift_and_a_phase_offset():
  rng = np.random.default_rng(0)
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  truth = np.exp(1j * ndimage.gaussian_filter(rng.normal(size=(48, 48)), 2)
                 * 5)
  moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(truth),
                                             (1.3, -2.64))) * np.exp(0.7j)
  region = np.zeros((48, 48), bool)
  region[8:40, 6:42] = True
  aligned, shift = metrics.register(moved, truth, region)
  assert shift == pytest.approx((-1.3, 2.64), abs=0.011)
  assert np.abs(aligned - truth)[region].max() < 0.05


def _smooth_object(rng, shape):
  """A band-limited complex object (so a Fourier shift is exact)."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  phase = ndimage.gaussian_filter(rng.normal(size=shape), 2) * 5
  amplitude = 1 + 3 * ndimage.gaussian_filter(rng.normal(size=shape), 2)
  return amplitude * np.exp(1j * phase)


@pytest.mark.parametrize("order", [1, 2])
def test_register_blind_removes_a_ramp_a_scale_and_a_shift(order):
  rng = np.random.default_rng(1)
  shape = (48, 56)
  truth = _smooth_object(rng, shape)
  region = np.zeros(shape, bool)
  region[6:40, 8:50] = True
  # numpy reference: the estimate is the truth times 1 / scale and
  # exp(-i surface), moved by (1.3, -2.6) px (a Fourier shift).
  y, x = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
  surface = 0.4 + 0.21 * (y - 22) - 0.17 * (x - 28)  # wraps several times
  if order == 2:
    surface = surface + 1.5 * ((y - 20) / 30) ** 2 - ((x - 30) / 30) ** 2
  blurred = truth * np.exp(-1j * surface) / 2.5
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  estimate = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(blurred),
                                                (1.3, -2.6)))
  aligned, info = metrics.register_blind(estimate, truth, region, order=order,
                                         precision=0.1)
  assert info["shift"] == pytest.approx((-1.3, 2.6), abs=1e-9)
  assert info["scale"] == pytest.approx(2.5, rel=1e-9)
  np.testing.assert_allclose(aligned[region], truth[region], atol=1e-8)
  # Only the constant and the shift: the ramp is left, the scores drop.
  constant, _ = metrics.register(estimate, truth, region)
  assert np.abs(constant - truth)[region].max() > 1


def test_fit_phase_surface_of_a_wrapped_plane_with_noise():
  rng = np.random.default_rng(2)
  shape = (40, 40)
  reference = _smooth_object(rng, shape)
  y, x = np.mgrid[:40, :40] - 19.5
  plane = -1.0 + 0.3 * y + 0.45 * x
  noise = 0.05 * rng.normal(size=shape)
  estimate = reference * np.exp(-1j * (plane + noise))
  surface, coefficients = metrics.fit_phase_surface(estimate, reference)
  np.testing.assert_allclose(coefficients[1:], [0.3, 0.45], atol=2e-3)
  residual = np.angle(np.exp(1j * (surface - plane)))
  assert np.abs(residual).max() < 0.03
  assert metrics.amplitude_scale(estimate * 0.5, reference) == (
      pytest.approx(2.0))
  with pytest.raises(ValueError, match="order"):
    metrics.fit_phase_surface(estimate, reference, order=3)
