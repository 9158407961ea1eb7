"""`python -m ptychonet_tf.reconstruct`: methods, outputs, the SavedModel contract, errors."""
import os
import re

import h5py
import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_one_line_error, run_cli
from ptychonet_tf.data import scanfile
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib

# End-to-end: every test here runs the command line in subprocesses.
pytestmark = pytest.mark.slow


CLI = ["-m", "ptychonet_tf.reconstruct"]


def _tiny_scan(seed=0):
  """A noise-free scan with a zone-plate probe [16, 16] (lit everywhere)."""
  rng = np.random.default_rng(seed)
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.5)
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(12, 1.5), (16, 16))
  obj = (rng.uniform(0.5, 1.0, shape) *
         np.exp(1j * rng.uniform(-1.0, 0.0, shape))).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return scanfile.Scan(amplitudes=amps, layout=layout, probe=probe,
                       object_shape=shape, object=obj)


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("scan") / "tiny.npz")
  _tiny_scan().save(path)
  return path


def _write_raw_scan(path, scan, **changes):
  """Writes the arrays with np.savez, bypassing Scan.save's validation."""
  arrays = dict(amplitudes=scan.amplitudes, layout=scan.layout,
                probe=scan.probe,
                object_shape=np.asarray(scan.object_shape, np.int32))
  arrays.update(changes)
  np.savez(path, **arrays)
  return path


class ConstantNet(tf.Module):
  """A stand-in PtychoNet: stitches constant patches into the object.

  Honours the SavedModel contract: amplitudes float32 [batch, N, h, w] ->
  amplitude, phase float32 [batch, H, W]; the output is the mean over the
  windows covering each pixel of a constant object `obj` (so, inside the
  scan, `obj` itself), whatever the amplitudes.
  """

  def __init__(self, obj, layout, probe_shape):
    super().__init__()
    count = len(layout)
    h, w = probe_shape
    shape = obj.shape
    patches = forward.extract(obj, layout, probe_shape)
    total = forward.stitch(patches, layout, shape)
    count_map = forward.overlap_count(layout, shape, probe_shape)
    stitched = (total / tf.cast(tf.maximum(count_map, 1.0), tf.complex64)).numpy()
    self.amplitude = tf.constant(np.abs(stitched), tf.float32)
    self.phase = tf.constant(np.angle(stitched), tf.float32)

    @tf.function(input_signature=[
        tf.TensorSpec([None, count, h, w], tf.float32, name="amplitudes")])
    def serve(amplitudes):
      ones = tf.ones([tf.shape(amplitudes)[0], 1, 1], tf.float32)
      return {"amplitude": self.amplitude * ones, "phase": self.phase * ones}

    self.serve = serve


def _export(base, version, obj, layout, probe_shape):
  module = ConstantNet(obj, layout, probe_shape)
  path = os.path.join(base, str(version))
  tf.saved_model.save(module, path, signatures={
      "serving_default": module.serve.get_concrete_function()})
  return path


def test_dm_writes_the_object_metrics_and_pngs(scan_path, tmp_path):
  out = str(tmp_path / "rec.npz")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=dm",
                          "--iterations=200", f"--out={out}", "--png"])
  assert result.returncode == 0, result.stderr
  # Every score line names its region: the package's one illuminated region,
  # written beside the object.
  scores = [l for l in result.stdout.splitlines() if "amplitude PSNR" in l]
  assert scores and scores[0].startswith(metrics.region_name()), scores
  with np.load(out) as f:
    scan = _tiny_scan()
    np.testing.assert_array_equal(f["region"], metrics.illuminated_region(
        scan.layout, scan.object_shape, f["probe"]))
    assert f["object"].dtype == np.complex64
    assert f["object"].shape == tuple(_tiny_scan().object_shape)
    assert f["chi"].shape == (200,) and f["fourier_error"].shape == (200,)
    assert float(f["seconds"]) > 0 and float(f["seconds_per_iteration"]) > 0
    assert str(f["method"]) == "dm"
    assert f["amplitude_psnr"] > 35 and f["phase_psnr"] > 35
  for name in ("rec_amplitude.png", "rec_phase.png"):
    assert os.path.getsize(tmp_path / name) > 100
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_epie(scan_path, tmp_path):
  out = str(tmp_path / "epie.npz")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=epie",
                          "--iterations=30", f"--out={out}"])
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    assert f["chi"].shape == (30,)
    assert f["fourier_error"][-1] < 0.05 * f["fourier_error"][0]
  # One scan's ePIE is sequential: by default it runs pinned to one core.
  assert re.search(r"^epie: [0-9.]+ s on 1 core,", result.stdout, re.M), (
      result.stdout)


def test_pnp_with_the_shipped_prior(scan_path, tmp_path):
  out = str(tmp_path / "pnp.npz")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=pnp",
                          "--iterations=20", "--lsqml_batch_size=4",
                          "--sigma_start=0.05", "--sigma_end=0.01",
                          f"--out={out}"])
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    assert str(f["method"]) == "pnp" and f["chi"].shape == (20,)
    assert f["fourier_error"][-1] < 0.1 * f["fourier_error"][0]


def test_lsqml_with_its_flags(scan_path, tmp_path):
  out = str(tmp_path / "lsqml.npz")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=lsqml",
                          "--iterations=60", "--lsqml_batch_size=4",
                          "--noise_model=poisson", f"--out={out}"])
  assert result.returncode == 0, result.stderr
  assert "lsqml:" in result.stdout and "ms per iteration" in result.stdout
  with np.load(out) as f:
    assert str(f["method"]) == "lsqml" and f["chi"].shape == (60,)
    assert f["fourier_error"][-1] < 1e-3 * f["fourier_error"][0]
  # A batch larger than the scan (12 positions) is one line.
  bad = run_cli(CLI + [f"--scan={scan_path}", "--method=lsqml",
                       "--lsqml_batch_size=13", f"--out={out}"])
  assert_one_line_error(bad, "batch_size=13 must be in 1..12")


def test_ptychonet_and_ptychonet_dm_use_the_highest_version(scan_path,
                                                            tmp_path):
  scan = _tiny_scan()
  base = str(tmp_path / "export")
  # Version 1 holds garbage, version 2 the truth: the base dir must pick 2.
  _export(base, 1, np.ones(scan.object_shape, np.complex64), scan.layout,
          (16, 16))
  _export(base, 2, scan.object, scan.layout, (16, 16))
  out = str(tmp_path / "net.npz")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=ptychonet",
                          f"--saved_model={base}", f"--out={out}"])
  assert result.returncode == 0, result.stderr
  mask = layouts.scanned_mask(scan.layout, scan.object_shape)
  with np.load(out) as f:
    np.testing.assert_allclose(f["object"][mask], scan.object[mask], atol=1e-5)
    assert f["chi"].shape == (0,) and float(f["network_seconds"]) > 0
  # DM started at the (perfect) network output stays there; from a flat
  # start 5 iterations are far from it.
  results = {}
  for method in ("ptychonet+dm", "dm"):
    out = str(tmp_path / f"{method}.npz")
    result = run_cli(CLI + [f"--scan={scan_path}", f"--method={method}",
                            f"--saved_model={base}/2", "--iterations=5",
                            f"--out={out}"])
    assert result.returncode == 0, result.stderr
    with np.load(out) as f:
      results[method] = float(f["phase_psnr"])
  assert results["ptychonet+dm"] > 60 > 30 > results["dm"], results


def test_saved_model_with_other_geometry_is_one_line(scan_path, tmp_path):
  layout, shape = layouts.layout_from_positions(layouts.fermat_spiral(7, 1.5),
                                                (16, 16))
  path = _export(str(tmp_path / "other"), 3, np.ones(shape, np.complex64),
                 layout, (16, 16))
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=ptychonet",
                          f"--saved_model={path}",
                          f"--out={tmp_path / 'x.npz'}"])
  assert_one_line_error(result, "takes amplitudes [None, 7, 16, 16]",
                        "[batch, 12, 16, 16]")
  result = run_cli(CLI + [f"--scan={scan_path}", "--method=ptychonet",
                          f"--saved_model={tmp_path}",
                          f"--out={tmp_path / 'x.npz'}"])
  assert_one_line_error(result, "no saved_model.pb")


def _bad_scans(tmp_path):
  scan = _tiny_scan()
  amps = scan.amplitudes.copy()
  nan = amps.copy()
  nan[3, 2, 2] = np.nan
  hdf5 = str(tmp_path / "empty.h5")
  with h5py.File(hdf5, "w") as f:
    f["entry_1/instrument_1/detector_1/distance"] = 1.0
  return [
      (_write_raw_scan(str(tmp_path / "probe.npz"), scan,
                       probe=scan.probe[:8, :8]), ["probe has shape (8, 8)"]),
      (_write_raw_scan(str(tmp_path / "nan.npz"), scan, amplitudes=nan),
       ["NaN", "pattern 3"]),
      (_write_raw_scan(str(tmp_path / "neg.npz"), scan, amplitudes=-amps),
       ["negative"]),
      (_write_raw_scan(str(tmp_path / "outside.npz"), scan,
                       layout=scan.layout + 40), ["falls outside"]),
      (hdf5, ["holds no diffraction data"]),
      (str(tmp_path / "missing.npz"), ["does not exist"]),
  ]


def test_bad_scans_end_in_one_line(tmp_path):
  for path, fragments in _bad_scans(tmp_path):
    result = run_cli(CLI + [f"--scan={path}", f"--out={tmp_path / 'x.npz'}"])
    assert_one_line_error(result, *fragments)
  assert not os.path.exists(tmp_path / "x.npz")


