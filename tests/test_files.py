"""utils.files: atomic writes leave the old file or the whole new one; load_arrays names non-archives."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
  path = str(tmp_path / "out.txt")
  files.write_text(path, "old")

  def failing(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    files.atomic_write(path, failing)
  assert open(path).read() == "old"
  assert os.listdir(tmp_path) == ["out.txt"]  # no temp file left


def test_save_npz_json_and_figures_use_the_exact_name(tmp_path):
  files.save_npz(str(tmp_path / "a.npz"), x=np.arange(3))
  files.save_npz(str(tmp_path / "noext"), x=np.arange(2))
  files.write_json(str(tmp_path / "sub" / "r.json"), {"a": 1}, make_parent=True)
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure()
  fig.add_subplot().plot([0, 1])
  files.save_figure(str(tmp_path / "f.png"), fig)
  assert sorted(os.listdir(tmp_path)) == ["a.npz", "f.png", "noext", "sub"]
  with files.load_arrays(str(tmp_path / "noext"), "x") as f:
    np.testing.assert_array_equal(f["x"], [0, 1])
  assert open(tmp_path / "f.png", "rb").read(4) == b"\x89PNG"


def test_replace_dir_swaps_whole_directories(tmp_path):
  final, tmp = tmp_path / "1", tmp_path / ".tmp"
  final.mkdir()
  (final / "old").write_text("old")
  tmp.mkdir()
  (tmp / "new").write_text("new")
  files.replace_dir(str(tmp), str(final))
  assert os.listdir(final) == ["new"] and sorted(os.listdir(tmp_path)) == ["1"]


@pytest.mark.parametrize("content, looks", [
    (b"amplitudes are elsewhere\n", "it looks like text"),
    (b"", "it looks like empty"),
    (b"\x89HDF\r\n\x1a\nxxxx", "it looks like an HDF5 file"),
])
def test_load_arrays_names_what_a_file_is(tmp_path, content, looks):
  path = tmp_path / "scan.npz"
  path.write_bytes(content)
  with pytest.raises(UserError, match=f"scan file .* is not an NPZ file.*{looks}"):
    files.load_arrays(str(path), f"scan file {path}")


def test_load_arrays_png_npy_and_bytes(tmp_path):
  png = tmp_path / "p.npz"
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
  with pytest.raises(UserError, match="a PNG image"):
    files.load_arrays(str(png), "probe file")
  np.save(tmp_path / "p.npy", np.ones(3))
  with pytest.raises(UserError, match="is not an NPZ file"):
    files.load_arrays(str(tmp_path / "p.npy"), "scan file")
  np.testing.assert_array_equal(
      files.load_arrays(str(tmp_path / "p.npy"), "probe", allow_npy=True),
      np.ones(3))
  buffer = io.BytesIO()
  np.savez(buffer, a=np.zeros(2))
  with files.load_arrays(buffer, "in memory") as f:
    assert list(f.keys()) == ["a"]
  damaged = tmp_path / "d.npz"
  damaged.write_bytes(buffer.getvalue()[:30])
  with pytest.raises(UserError, match="damaged numpy archive"):
    with files.load_arrays(str(damaged), "scan file") as f:
      dict(f)
