"""`python -m ptychonet_tf.simulate` end to end, checked by an independent numpy forward model."""
import numpy as np
import pytest
from PIL import Image

from helpers import run_cli


# End-to-end: every test here runs the command line in subprocesses.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  d = tmp_path_factory.mktemp("imgs")
  rng = np.random.default_rng(0)
  paths = []
  for i in range(2):
    p = d / f"im{i}.png"
    Image.fromarray((rng.random((300, 260)) * 255).astype(np.uint8)).save(p)
    paths.append(str(p))
  return paths


def _numpy_amplitudes(obj, probe, layout):
  h, w = probe.shape
  out = []
  for t, b, l, r in layout:
    psi = probe.astype(np.complex128) * obj[t:b, l:r].astype(np.complex128)
    out.append(np.abs(np.fft.fftshift(np.fft.fft2(psi))) / np.sqrt(h * w))
  return np.stack(out)


@pytest.mark.slow
def test_dense_paper_config(tmp_path, images):
  out = tmp_path / "scan.npz"
  res = run_cli(["-m", "ptychonet_tf.simulate", "--flagfile=configs/dense.flags",
                 f"--amplitude_image={images[0]}", f"--phase_image={images[1]}",
                 f"--out={out}"])
  assert res.returncode == 0, res.stderr
  with np.load(out) as f:
    amps, layout, probe, obj = f["amplitudes"], f["layout"], f["probe"], f["object"]
  assert amps.shape == (354, 128, 128) and amps.dtype == np.float32
  assert layout.shape == (354, 4) and layout.dtype == np.int32
  assert probe.dtype == np.complex64 and obj.dtype == np.complex64
  assert abs(obj.shape[0] - 478) <= 2 and abs(obj.shape[1] - 480) <= 2
  ref = _numpy_amplitudes(obj, probe, layout)
  assert np.abs(amps - ref).max() <= 1e-4 * np.abs(ref).max()


def test_small_config_and_phase_only(tmp_path, images):
  out = tmp_path / "scan.npz"
  res = run_cli(["-m", "ptychonet_tf.simulate", "--flagfile=configs/small_sparse.flags",
                 "--object_mode=phase_only", f"--phase_image={images[1]}",
                 f"--out={out}"])
  assert res.returncode == 0, res.stderr
  with np.load(out) as f:
    assert f["amplitudes"].shape == (25, 64, 64)
    np.testing.assert_allclose(np.abs(f["object"]), 0.5, rtol=1e-5)
    ref = _numpy_amplitudes(f["object"], f["probe"], f["layout"])
    assert np.abs(f["amplitudes"] - ref).max() <= 1e-4 * ref.max()


