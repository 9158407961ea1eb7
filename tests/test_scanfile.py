import numpy as np
import pytest

from ptychonet_tf.data import scanfile
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator


@pytest.fixture(scope="module")
def scan():
  g = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=12, step=2.0)))
  obj = np.exp(1j * np.linspace(-1, 0, np.prod(g.object_shape))).reshape(
      g.object_shape).astype(np.complex64)
  amps = simulator.Simulator(g).amplitudes(obj[None])[0]
  return scanfile.Scan(amps, g.layout, g.probe, g.object_shape, obj)


def test_round_trip(tmp_path, scan):
  path = str(tmp_path / "s.npz")
  scan.save(path)
  loaded = scanfile.load_scan(path)
  for key in ("amplitudes", "layout", "probe", "object"):
    np.testing.assert_array_equal(getattr(loaded, key), getattr(scan, key))
  assert loaded.object_shape == scan.object_shape
  assert not list(tmp_path.glob("*.tmp*"))


def test_object_shape_inferred_without_object(tmp_path, scan):
  path = str(tmp_path / "s.npz")
  np.savez(path, amplitudes=scan.amplitudes, layout=scan.layout, probe=scan.probe)
  loaded = scanfile.load_scan(path)
  assert loaded.object is None
  assert loaded.object_shape == (int(scan.layout[:, 1].max()), int(scan.layout[:, 3].max()))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__("amplitudes", np.where(np.arange(16) == 3, np.nan, a["amplitudes"]).astype(np.float32)), "NaN"),
    (lambda a: a.__setitem__("amplitudes", -a["amplitudes"]), "negative"),
    (lambda a: a.__setitem__("probe", a["probe"][:8]), "probe has shape"),
    (lambda a: a.__setitem__("layout", a["layout"] + 100), "falls outside"),
    (lambda a: a.__setitem__("layout", a["layout"][:3]), "layout has shape"),
    (lambda a: a.pop("probe"), "lacks"),
])
def test_invalid_scans_are_user_errors(tmp_path, scan, change, message):
  arrays = dict(amplitudes=scan.amplitudes.copy(), layout=scan.layout.copy(),
                probe=scan.probe.copy(), object_shape=np.array(scan.object_shape))
  change(arrays)
  path = str(tmp_path / "bad.npz")
  np.savez(path, **arrays)
  with pytest.raises(UserError, match=message):
    scanfile.load_scan(path)


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    scanfile.load_scan(str(tmp_path / "nope.npz"))
  (tmp_path / "junk.npz").write_bytes(b"junk")
  with pytest.raises(UserError, match="is not an NPZ file"):
    scanfile.load_scan(str(tmp_path / "junk.npz"))


def test_save_to_directory_or_missing_folder(tmp_path, scan):
  with pytest.raises(UserError, match="is a directory"):
    scan.save(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    scan.save(str(tmp_path / "no" / "s.npz"))
