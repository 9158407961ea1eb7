"""Readers for external scans: tike .npz(.bz2), CXI/HDF5, and the two real files."""
import bz2
import io
import os

import h5py
import numpy as np
import pytest

from ptychonet_tf.data import readers
from ptychonet_tf.data import scanfile
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib

STAR = os.path.join("ptycho-tike-siemens-star", "siemens-star-small.npz.bz2")
PETRA = os.path.join("ptycho-cdtools-petra3-nearfield",
                     "PETRAIII_P25_Near_Field_Ptycho.cxi")


def _simulated(count=9, size=16, seed=0):
  """(centred amplitudes [N, h, w], positions [N, 2] px, probe, object)."""
  rng = np.random.default_rng(seed)
  probe = probe_lib.make_probe((size, size), "pinhole", 0.6)
  positions = layouts.mesh(3, 3, 3.0)[:count]
  layout, shape = layouts.layout_from_positions(positions, (size, size))
  obj = np.exp(1j * rng.uniform(-1, 0, shape)).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return amps, positions, probe, layout


def test_intensities_become_centred_amplitudes():
  amps, _, _, _ = _simulated()
  corner = np.fft.ifftshift(amps ** 2, axes=(-2, -1))
  assert readers.detect_zero_frequency(corner) == "corner"
  assert readers.detect_zero_frequency(amps ** 2) == "center"
  np.testing.assert_allclose(readers.to_amplitudes(corner), amps, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(readers.to_amplitudes(amps ** 2, "center"), amps,
                             rtol=1e-5, atol=1e-6)
  # Negative intensities (background subtraction) clip to 0.
  assert readers.to_amplitudes(-np.ones((1, 4, 4)), "center").max() == 0
  with pytest.raises(UserError, match="NaN"):
    readers.to_amplitudes(np.full((1, 4, 4), np.nan))


def test_tike_reader(tmp_path):
  amps, positions, probe, layout = _simulated()
  path = str(tmp_path / "tiny.npz.bz2")
  buffer = io.BytesIO()
  np.savez(buffer, data=np.fft.ifftshift(amps ** 2, axes=(-2, -1))[None],
           scan=(positions - 7.5)[None].astype(np.float32),
           probe=(3 * probe)[None, None, None, None])
  with bz2.open(path, "wb") as f:
    f.write(buffer.getvalue())
  scan = readers.read_scan(path, margin=2)
  np.testing.assert_allclose(scan.amplitudes, amps, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(scan.layout, layout + [2, 2, 2, 2])
  assert scan.object_shape == (layout[:, 1].max() + 4, layout[:, 3].max() + 4)
  # The probe keeps its shape and is scaled to the data's mean energy.
  energy = np.mean(np.sum(amps.astype(np.float64) ** 2, axis=(1, 2)))
  scale = np.sqrt(energy / np.sum(np.abs(probe.astype(np.complex128)) ** 2))
  np.testing.assert_allclose(scan.probe, probe * scale, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.sum(np.abs(scan.probe) ** 2),
                             np.mean(np.sum(amps ** 2, axis=(1, 2))), rtol=1e-4)


def _write_cxi(path, amps, positions, pixel, with_data=True, probe=None):
  """A minimal CXI file: positions [N, 2] in object pixels of size `pixel` m."""
  count, h, w = amps.shape
  wavelength, distance, det_pixel = 1e-10, 2.0, 100e-6
  assert np.isclose(wavelength * distance / (h * det_pixel), pixel)
  with h5py.File(path, "w") as f:
    f["cxi_version"] = 160
    det = f.create_group("entry_1/instrument_1/detector_1")
    if with_data:
      det["data"] = (amps ** 2).astype(np.float32)
      mask = np.zeros((h, w), np.uint32)
      mask[3, 5] = 1
      det["mask"] = mask
    det["distance"] = distance
    det["x_pixel_size"] = det_pixel
    det["y_pixel_size"] = det_pixel
    det["basis_vectors"] = np.array([[0, -det_pixel], [-det_pixel, 0], [0, 0]])
    f["entry_1/instrument_1/source_1/wavelength"] = wavelength
    # Sample translations (x, y, z) in metres; with these basis vectors (rows
    # along -y, columns along -x) window (i, j) sits at (-j, -i) * pixel.
    xyz = np.stack([-positions[:, 1], -positions[:, 0],
                    np.zeros(count)], axis=1) * pixel
    f["entry_1/sample_1/geometry_1/translation"] = xyz
    if probe is not None:
      f["entry_1/instrument_1/source_1/probe"] = probe


def test_cxi_reader(tmp_path):
  amps, positions, probe, layout = _simulated(size=16)
  path = str(tmp_path / "tiny.cxi")
  pixel = 1e-10 * 2.0 / (16 * 100e-6)
  _write_cxi(path, amps, positions, pixel, probe=probe)
  scan = readers.read_scan(path, margin=0)
  np.testing.assert_array_equal(scan.layout, layout)
  keep = np.ones(amps.shape[1:], bool)
  keep[3, 5] = False  # the masked pixel is replaced by a local median
  np.testing.assert_allclose(scan.amplitudes[:, keep], amps[:, keep],
                             rtol=1e-5, atol=1e-6)
  assert np.isfinite(scan.amplitudes).all()
  # An explicit pixel size overrides the far-field one.
  half = readers.read_scan(path, margin=0, pixel_size=2 * pixel)
  assert half.layout[:, 0].max() == pytest.approx(layout[:, 0].max() / 2, abs=1)


def test_cxi_without_probe_gets_a_guess(tmp_path):
  amps, positions, _, _ = _simulated()
  path = str(tmp_path / "noprobe.h5")
  _write_cxi(path, amps, positions, 1e-10 * 2.0 / (16 * 100e-6))
  scan = readers.read_scan(path)
  assert scan.probe.shape == (16, 16) and np.isfinite(scan.probe).all()


def test_hdf5_without_diffraction_data_is_a_user_error(tmp_path):
  amps, positions, _, _ = _simulated()
  path = str(tmp_path / "empty.cxi")
  _write_cxi(path, amps, positions, 1e-10 * 2.0 / (16 * 100e-6),
             with_data=False)
  with pytest.raises(UserError, match="holds no diffraction data"):
    readers.read_scan(path)


def test_unknown_and_missing_files_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    readers.read_scan(str(tmp_path / "nope.npz"))
  path = tmp_path / "x.txt"
  path.write_text("hello")
  with pytest.raises(UserError, match="unknown format"):
    readers.read_scan(str(path))


def test_project_npz_goes_to_load_scan(tmp_path):
  amps, _, probe, layout = _simulated()
  path = str(tmp_path / "scan.npz")
  scanfile.Scan(amplitudes=amps, layout=layout, probe=probe,
                object_shape=(int(layout[:, 1].max()),
                              int(layout[:, 3].max()))).save(path)
  scan = readers.read_scan(path)
  np.testing.assert_array_equal(scan.amplitudes, amps)
  np.testing.assert_array_equal(scan.probe, probe)  # not rescaled


def test_real_siemens_star_scan(shared_data):
  path = os.path.join(shared_data, STAR)
  if not os.path.isfile(path):
    pytest.skip(f"{path} not present")
  scan = readers.read_scan(path)
  assert scan.amplitudes.shape == (516, 128, 128)
  assert scan.probe.shape == (128, 128)
  assert scan.layout.shape == (516, 4)
  # Zero frequency was at the corner; now the bright field (the zone plate's
  # disk) is centred on (64, 64) and the corners are dark.
  mean = scan.amplitudes.astype(np.float64).mean(axis=0)
  y, x = np.indices(mean.shape)
  centroid = (np.sum(y * mean) / mean.sum(), np.sum(x * mean) / mean.sum())
  assert centroid == pytest.approx((64, 64), abs=4)
  assert mean[48:80, 48:80].mean() > 20 * mean[:16, :16].mean()
  assert 300 < scan.object_shape[0] < 600 and 300 < scan.object_shape[1] < 600


def test_real_petra3_cxi_file(shared_data):
  path = os.path.join(shared_data, PETRA)
  if not os.path.isfile(path):
    pytest.skip(f"{path} not present")
  scan = readers.read_scan(path)
  assert scan.amplitudes.shape == (200, 100, 100)
  assert scan.amplitudes.dtype == np.float32
  assert np.isfinite(scan.amplitudes).all() and scan.amplitudes.min() >= 0
  assert scan.layout.shape == (200, 4) and scan.probe.shape == (100, 100)
  with h5py.File(path, "r") as f:
    counts = f["entry_1/instrument_1/detector_1/data"][0].astype(np.float64)
    mask = f["entry_1/instrument_1/detector_1/mask"][()] != 0
  # Unmasked pixels are sqrt(counts) (the patterns are centred already).
  np.testing.assert_allclose(scan.amplitudes[0][~mask], np.sqrt(counts[~mask]),
                             rtol=1e-5)
  # Distinct positions spread over many pixels.
  assert len(np.unique(scan.layout[:, :1] * 10000 + scan.layout[:, 2:3])) > 150


@pytest.mark.slow
def test_dm_with_probe_refinement_fits_the_real_siemens_star(shared_data):
  path = os.path.join(shared_data, STAR)
  if not os.path.isfile(path):
    pytest.skip(f"{path} not present")
  from ptychonet_tf import reconstructors  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.baselines import dm  # pylint: disable=g-import-not-at-top
  scan = readers.read_scan(path)
  # The Fourier error falls below 0.05 at iteration 18 (0.032 at 24; 40
  # iterations end at 0.021).
  config = dm.DMConfig(iterations=24, refine_probe=True, probe_start=10,
                       probe_support=0.9, fourier_relax=0.05,
                       object_inertia=0.01, progress=False)
  result = reconstructors.reconstruct("dm", scan.amplitudes, scan.probe,
                                      scan.layout, scan.object_shape, config)
  # The initial probe guess explains the data poorly; the refined one well.
  assert result.fourier_error[9] > 0.15
  assert result.fourier_error[-1] < 0.05
