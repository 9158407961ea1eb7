"""evaluation.methods in-process: reconstruct(), run_learned(), run_dm()."""
import numpy as np
import pytest

from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import epie
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.data import scanfile
from ptychonet_tf.evaluation import methods
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib


@pytest.fixture(scope="module")
def scan():
  """A noise-free 16x16-probe mesh scan of a random object, truth included."""
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.6)
  layout, shape = layouts.layout_from_positions(layouts.mesh(4, 4, 4), (16, 16))
  rng = np.random.default_rng(3)
  obj = (rng.uniform(0.5, 1.0, shape) *
         np.exp(1j * rng.uniform(-1.0, 0.0, shape))).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return scanfile.Scan(amplitudes=amps, layout=layout, probe=probe,
                       object_shape=shape, object=obj)


class TruthModel:
  """A stand-in learned model that returns a fixed object and counts calls."""

  def __init__(self, obj):
    self.obj, self.calls = obj, 0

  def __call__(self, amplitudes):
    self.calls += 1
    return self.obj


def test_dm_and_epie_reach_the_truth(scan):
  mask = metrics.illuminated_region(scan.layout, scan.object_shape, scan.probe,
                                    0.1)
  configs = dict(dm_config=dm.DMConfig(iterations=60, progress=False),
                 epie_config=epie.EPIEConfig(iterations=30, progress=False))
  for method in ("dm", "epie"):
    result = methods.reconstruct(scan, method, **configs)
    assert result["object"].shape == tuple(scan.object_shape)
    assert len(result["chi"]) == (60 if method == "dm" else 30)
    assert result["fourier_error"][-1] < result["fourier_error"][0]
    scores = metrics.complex_metrics(result["object"], scan.object, mask)
    assert scores["amplitude_psnr"] > 20, (method, scores)
    assert result["network_seconds"] == 0.0


def test_lsqml_reaches_the_truth_and_runs_over_scans(scan):
  config = lsqml.LSQMLConfig(iterations=40, batch_size=4, chunk=20,
                             progress=False)
  result = methods.reconstruct(scan, "lsqml", lsqml_config=config)
  assert len(result["chi"]) == 40 and result["seconds_per_iteration"] > 0
  assert result["fourier_error"][-1] < 1e-3 * result["fourier_error"][0]
  mask = metrics.illuminated_region(scan.layout, scan.object_shape,
                                    scan.probe, 0.1)
  scores = metrics.complex_metrics(result["object"], scan.object, mask)
  assert scores["amplitude_psnr"] > 30, scores
  # run_dm runs LSQML when given its config: same objects, with the curve.
  geometry = geometry_lib.Geometry(probe=scan.probe, layout=scan.layout,
                                   object_shape=tuple(scan.object_shape))
  objects, per_scan, chi, curve = methods.run_dm(
      np.stack([scan.amplitudes] * 2), np.stack([scan.object] * 2), geometry,
      config, mask=mask, batch=2)
  np.testing.assert_allclose(objects[1], result["object"], atol=1e-4)
  assert per_scan > 0 and chi.shape == (40,)
  np.testing.assert_array_equal(curve["iterations"], [20, 40])
  assert curve["phase_psnr"][-1] == pytest.approx(scores["phase_psnr"],
                                                  abs=1e-2)


def test_learned_start_is_used_by_dm(scan):
  model = TruthModel(scan.object)
  alone = methods.reconstruct(scan, "ptychonet", model=model)
  np.testing.assert_array_equal(alone["object"], scan.object)
  assert model.calls == 2  # a warm-up call, then the timed one
  assert len(alone["chi"]) == 0 and alone["network_seconds"] > 0
  # DM started at the truth stays there (noise-free data).
  started = methods.reconstruct(
      scan, "ptychonet+dm", dm.DMConfig(iterations=5, progress=False),
      model=model)
  mask = metrics.scanned_region(scan.layout, scan.object_shape)
  scores = metrics.complex_metrics(started["object"], scan.object, mask)
  assert scores["amplitude_psnr"] > 60


def test_bad_method_and_missing_model(scan):
  with pytest.raises(ValueError, match="not one of"):
    methods.reconstruct(scan, "gd")
  with pytest.raises(ValueError, match="needs a model"):
    methods.reconstruct(scan, "ptychonet")


def test_run_learned_and_run_dm_over_scans(scan):
  amplitudes = np.stack([scan.amplitudes] * 3)
  truths = np.stack([scan.object] * 3)
  objects, seconds = methods.run_learned(TruthModel(scan.object), amplitudes)
  assert objects.shape == (3,) + tuple(scan.object_shape) and seconds >= 0
  geometry = geometry_lib.Geometry(probe=scan.probe, layout=scan.layout,
                                   object_shape=tuple(scan.object_shape))
  mask = metrics.scanned_region(scan.layout, scan.object_shape)
  config = dm.DMConfig(iterations=20, chunk=5, progress=False)
  objects, per_scan, chi, curve = methods.run_dm(
      amplitudes, truths, geometry, config, mask=mask, batch=2)
  assert objects.shape == (3,) + tuple(scan.object_shape)
  assert per_scan > 0 and chi.shape == (20,)
  np.testing.assert_array_equal(curve["iterations"], [5, 10, 15, 20])
  assert curve["mse"][-1] < curve["mse"][0]
  assert curve["amplitude_psnr"][-1] > curve["amplitude_psnr"][0]
  final = metrics.complex_metrics(objects[0], truths[0], mask)
  assert curve["amplitude_psnr"][-1] == pytest.approx(
      final["amplitude_psnr"], abs=1e-3)
  assert curve["phase_psnr"][-1] == pytest.approx(final["phase_psnr"],
                                                  abs=1e-3)
  # Batches of 2 and 1 give the same objects as one batch of 3.
  again, _, _, _ = methods.run_dm(amplitudes, truths, geometry, config,
                                  mask=mask, batch=3)
  np.testing.assert_allclose(again, objects, atol=1e-4)
