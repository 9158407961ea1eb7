"""physics.resample: a 2h x 2w scan cropped to h x w is the h x w scan of the
object at twice the pixel size."""
import numpy as np
from scipy import ndimage
import pytest

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import resample


def _gaussian_probe(size, sigma, curvature):
  y, x = np.mgrid[:size, :size] - size / 2
  r2 = x ** 2 + y ** 2
  return np.exp(-r2 / (2 * sigma ** 2) + 1j * curvature * r2)


def test_cropped_patterns_are_the_scan_of_the_coarser_object():
  """A smooth object (detail well inside the coarse band) and a Gaussian
  probe (its spectrum inside the crop, itself inside its window): cropping
  the 32x32 patterns to 16x16 gives the 16x16 patterns of the object
  sampled at every other pixel, with the resampled probe and the corners
  halved, to 0.3% of the peak amplitude."""
  rng = np.random.default_rng(0)
  probe = _gaussian_probe(32, 3.0, 0.02)
  field = ndimage.gaussian_filter(rng.normal(size=(80, 80)), 3.0) * 3.0
  obj = np.exp(0.3 * field + 1j * field)
  corners = np.array([[0, 0], [8, 10], [20, 4], [30, 40], [46, 46], [12, 30]])
  layout = np.stack([corners[:, 0], corners[:, 0] + 32, corners[:, 1],
                     corners[:, 1] + 32], 1).astype(np.int32)
  fine = forward.diffraction_amplitudes(obj.astype(np.complex64),
                                        probe.astype(np.complex64),
                                        layout).numpy()
  cropped = resample.crop_patterns(fine, (16, 16))
  coarse_probe = resample.resample_probe(probe, (16, 16))
  coarse_layout = layout // resample.crop_factor((32, 32), (16, 16))
  coarse = forward.diffraction_amplitudes(
      obj[::2, ::2].astype(np.complex64), coarse_probe, coarse_layout).numpy()
  assert cropped.shape == (6, 16, 16)
  assert np.abs(cropped - coarse).max() <= 3e-3 * fine.max()
  # The probe: twice the fine probe at every other pixel (band-limited), and
  # its energy that of the cropped spectrum (Parseval), as the patterns'.
  np.testing.assert_allclose(coarse_probe, 2 * probe[::2, ::2], atol=1e-4)
  np.testing.assert_allclose(np.sum(cropped ** 2), np.sum(fine ** 2),
                             rtol=1e-4)


def test_crop_keeps_zero_frequency_at_the_centre():
  patterns = np.zeros((2, 8, 8), np.float32)
  patterns[:, 4, 4] = 1.0  # detector zero frequency at (h//2, w//2)
  cropped = resample.crop_patterns(patterns, (4, 4))
  assert cropped[:, 2, 2].tolist() == [1.0, 1.0] and cropped.sum() == 2.0
  # A flat probe's spectrum is one zero-frequency bin: it stays flat.
  flat = resample.resample_probe(np.ones((8, 8), np.complex64), (4, 4))
  np.testing.assert_allclose(flat, 2 * np.ones((4, 4)), atol=1e-6)


@pytest.mark.parametrize("big, small", [((128, 128), (48, 48)),
                                        ((128, 96), (64, 64)),
                                        ((64, 64), (0, 32))])
def test_crop_factor_refuses_sizes_that_are_no_multiple(big, small):
  with pytest.raises(ValueError, match="not an integer multiple"):
    resample.crop_factor(big, small)
  assert resample.crop_factor((128, 128), (64, 64)) == 2
  assert resample.crop_factor((64, 64), (64, 64)) == 1
