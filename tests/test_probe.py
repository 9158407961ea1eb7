import numpy as np
import pytest

from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import probe as probe_lib


@pytest.mark.parametrize("kind", probe_lib.PROBE_KINDS)
def test_probe_is_a_focused_disk_with_curved_phase(kind):
  p = probe_lib.make_probe((64, 48), kind, diameter=0.5)
  assert p.shape == (64, 48) and p.dtype == np.complex64
  assert np.abs(p).max() == pytest.approx(1.0)
  y, x = np.mgrid[:64, :48]
  r = np.hypot(y - 32, x - 24)
  energy = np.abs(p) ** 2
  # Energy concentrated in a central disk (radius 0.35 * 48 px), little at the edge.
  assert energy[r < 0.35 * 48].sum() / energy.sum() > 0.95
  # Curved phase: not a constant phase over the bright region.
  bright = np.abs(p) > 0.3
  assert np.ptp(np.angle(p[bright])) > 1.0


def test_probe_rejects_bad_arguments():
  with pytest.raises(UserError, match="unknown probe kind"):
    probe_lib.make_probe((16, 16), "laser")
  with pytest.raises(UserError, match="too small"):
    probe_lib.make_probe((2, 16))


def test_load_probe_npy_npz_and_shape_check(tmp_path):
  p = probe_lib.make_probe((16, 16))
  np.save(tmp_path / "p.npy", p)
  np.savez(tmp_path / "p.npz", probe=p, other=np.zeros(3))
  np.testing.assert_array_equal(probe_lib.load_probe(str(tmp_path / "p.npy")), p)
  np.testing.assert_array_equal(
      probe_lib.load_probe(str(tmp_path / "p.npz"), expected_shape=(16, 16)), p)
  with pytest.raises(UserError, match=r"has shape \(16, 16\); expected \(32, 32\)"):
    probe_lib.load_probe(str(tmp_path / "p.npy"), expected_shape=(32, 32))
  with pytest.raises(UserError, match="does not exist"):
    probe_lib.load_probe(str(tmp_path / "missing.npy"))
  (tmp_path / "junk.npy").write_bytes(b"not numpy")
  with pytest.raises(UserError, match="is not an NPZ file"):
    probe_lib.load_probe(str(tmp_path / "junk.npy"))


def test_geometry_with_probe_file_and_save_load(tmp_path):
  p = probe_lib.make_probe((16, 16), "pinhole")
  np.save(tmp_path / "p.npy", p)
  cfg = geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16), file=str(tmp_path / "p.npy")),
      scan=geometry_lib.ScanConfig(pattern="mesh", rows=3, cols=3, step=5))
  g = geometry_lib.make_geometry(cfg)
  np.testing.assert_array_equal(g.probe, p)
  assert g.object_shape == (26, 26) and g.num_positions == 9
  g.save(str(tmp_path / "g.npz"))
  g2 = geometry_lib.Geometry.load(str(tmp_path / "g.npz"))
  np.testing.assert_array_equal(g2.layout, g.layout)
  assert g2.object_shape == g.object_shape
