import numpy as np
import pytest

from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts


def test_fermat_count_and_spacing():
  pos = layouts.fermat_spiral(354, 9.53)
  assert pos.shape == (354, 2)
  d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  nn = d.min(axis=1)
  # Near-uniform coverage: nearest neighbours 1-2.5 steps apart, no duplicates.
  assert nn.min() >= 0.999 * 9.53 and nn.max() < 2.5 * 9.53


def test_paper_dense_geometry():
  cfg = geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(128, 128)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=354, step=9.53))
  layout, shape = layouts.layout_from_positions(cfg.scan.positions(), (128, 128))
  assert layout.shape == (354, 4) and layout.dtype == np.int32
  assert abs(shape[0] - 478) <= 2 and abs(shape[1] - 480) <= 2


def test_mesh_subsampling_paper_sparse():
  full = layouts.mesh(20, 20, 17)
  sparse = layouts.mesh(20, 20, 17, every=4)
  assert len(full) == 400 and len(sparse) == 25
  assert sorted(set(sparse[:, 0])) == [0, 68, 136, 204, 272]
  # Every sparse position is a position of the full mesh.
  full_set = {tuple(p) for p in full}
  assert all(tuple(p) in full_set for p in sparse)


def test_concentric_circles_count():
  for rings in range(4):
    assert len(layouts.concentric_circles(rings, 5.0)) == 1 + 3 * rings * (rings + 1)


@pytest.mark.parametrize("positions", [
    layouts.fermat_spiral(50, 3.0), layouts.mesh(4, 5, 6.5),
    layouts.concentric_circles(3, 4.0)])
def test_layout_in_bounds_and_covering(positions):
  layout, shape = layouts.layout_from_positions(positions, (16, 12), margin=2)
  layouts.check_layout(layout, shape, (16, 12))
  assert (layout[:, 1] - layout[:, 0] == 16).all()
  assert (layout[:, 3] - layout[:, 2] == 12).all()
  assert layout[:, 0].min() == 2 and layout[:, 2].min() == 2
  assert layout[:, 1].max() == shape[0] - 2 and layout[:, 3].max() == shape[1] - 2


def test_overlap_dense_vs_sparse():
  dense, _ = layouts.layout_from_positions(layouts.fermat_spiral(100, 4.65), (64, 64))
  sparse, _ = layouts.layout_from_positions(layouts.mesh(20, 20, 8.5, every=4), (64, 64))
  assert layouts.overlap_fraction(dense) > 0.8
  assert 0.4 < layouts.overlap_fraction(sparse) < 0.5  # 1 - 34/64
  full_mesh, _ = layouts.layout_from_positions(layouts.mesh(3, 3, 16), (16, 16))
  assert layouts.overlap_fraction(full_mesh) == pytest.approx(0.0)


def test_scanned_mask():
  layout, shape = layouts.layout_from_positions(layouts.mesh(2, 2, 4), (4, 4), margin=1)
  mask = layouts.scanned_mask(layout, shape)
  assert mask.sum() == 8 * 8 and not mask[0].any()


def test_layout_outside_object_is_a_user_error():
  layout = np.array([[0, 16, 0, 16], [10, 26, 0, 16]], np.int32)
  with pytest.raises(UserError, match="row 1 .* falls outside the 20x20 object"):
    layouts.check_layout(layout, (20, 20), (16, 16))
  with pytest.raises(UserError, match="expected the probe size"):
    layouts.check_layout(layout, (40, 40), (8, 8))
  with pytest.raises(UserError, match=r"expected \[N, 4\]"):
    layouts.check_layout(np.zeros((3, 3)), (40, 40), (8, 8))


def test_bad_generator_arguments():
  with pytest.raises(UserError):
    layouts.fermat_spiral(0, 1.0)
  with pytest.raises(UserError):
    layouts.mesh(3, 3, -1)
  with pytest.raises(UserError, match="unknown scan pattern"):
    geometry_lib.ScanConfig(pattern="zigzag").positions()


def test_scan_pattern_file_takes_a_layout_as_it_is(tmp_path):
  """--scan=file: a dataset's geometry.npz (or a scan .npz) gives the layout
  and object size, e.g. a measured scan's jittered positions."""
  geo = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5,
                                   margin=3)))
  path = str(tmp_path / "geometry.npz")
  geo.save(path)
  config = geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16), file=path),
      scan=geometry_lib.ScanConfig(pattern="file", file=path))
  again = geometry_lib.make_geometry(config)
  np.testing.assert_array_equal(again.layout, geo.layout)
  assert again.object_shape == geo.object_shape
  np.testing.assert_array_equal(again.probe, geo.probe)
  # Without object_shape (a scan file may leave it out): the layout's extent.
  np.savez(tmp_path / "bare.npz", layout=geo.layout)
  layout, shape = layouts.load_layout(str(tmp_path / "bare.npz"), (16, 16))
  assert shape == (int(geo.layout[:, 1].max()), int(geo.layout[:, 3].max()))
  with pytest.raises(UserError, match="needs --scan_file"):
    geometry_lib.ScanConfig(pattern="file").layout((16, 16))
  with pytest.raises(UserError, match="spans 16x16 pixels; expected the "
                     "probe size 32x32"):
    layouts.load_layout(path, (32, 32))
  np.savez(tmp_path / "none.npz", probe=geo.probe)
  with pytest.raises(UserError, match="holds no 'layout'"):
    layouts.load_layout(str(tmp_path / "none.npz"), (16, 16))
  with pytest.raises(UserError, match="does not exist"):
    layouts.load_layout(str(tmp_path / "missing.npz"), (16, 16))
