"""The registry of reconstruction methods and evaluation.methods in-process.

reconstructors.reconstruct/configure/for_config over every method (one
result type), a method added by one class and one registry line, and
evaluation.methods' run_learned() and run_solver()."""
import numpy as np
import pytest

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import base
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
from ptychonet_tf.utils.errors import UserError


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


def run(method, scan, config=None, initial_object=None):
  return reconstructors.reconstruct(method, scan.amplitudes, scan.probe,
                                    scan.layout, scan.object_shape, config,
                                    initial_object)


@pytest.mark.slow
def test_dm_and_epie_reach_the_truth(scan):
  mask = metrics.illuminated_region(scan.layout, scan.object_shape, scan.probe,
                                    0.1)
  configs = dict(dm=dm.DMConfig(iterations=60, progress=False),
                 epie=epie.EPIEConfig(iterations=30, progress=False))
  for method, config in configs.items():
    result = run(method, scan, config)
    assert isinstance(result, base.Reconstruction) and result.method == method
    assert result.object.shape == tuple(scan.object_shape)
    assert len(result.chi) == (60 if method == "dm" else 30)
    assert result.fourier_error[-1] < result.fourier_error[0]
    scores = metrics.complex_metrics(result.object, scan.object, mask)
    assert scores["amplitude_psnr"] > 20, (method, scores)
    assert result.network_seconds == 0.0


@pytest.mark.slow
def test_lsqml_reaches_the_truth_and_runs_over_scans(scan):
  config = lsqml.LSQMLConfig(iterations=40, batch_size=4, chunk=20,
                             progress=False)
  result = run("lsqml", scan, config)
  assert len(result.chi) == 40 and result.seconds_per_iteration > 0
  assert result.fourier_error[-1] < 1e-3 * result.fourier_error[0]
  mask = metrics.illuminated_region(scan.layout, scan.object_shape,
                                    scan.probe, 0.1)
  scores = metrics.complex_metrics(result.object, scan.object, mask)
  assert scores["amplitude_psnr"] > 30, scores
  # run_solver runs LSQML when given its config: same objects, with the curve.
  geometry = geometry_lib.Geometry(probe=scan.probe, layout=scan.layout,
                                   object_shape=tuple(scan.object_shape))
  objects, per_scan, chi, curve = methods.run_solver(
      np.stack([scan.amplitudes] * 2), np.stack([scan.object] * 2), geometry,
      config, mask=mask, batch=2)
  np.testing.assert_allclose(objects[1], result.object, atol=1e-4)
  assert per_scan > 0 and chi.shape == (40,)
  np.testing.assert_array_equal(curve["iterations"], [20, 40])
  assert curve["phase_psnr"][-1] == pytest.approx(scores["phase_psnr"],
                                                  abs=1e-2)


def test_learned_start_is_used_by_dm(scan):
  model = TruthModel(scan.object)
  alone = run("ptychonet", scan, reconstructors.configure("ptychonet",
                                                         model=model))
  np.testing.assert_array_equal(alone.object, scan.object)
  assert model.calls == 2  # a warm-up call, then the timed one
  assert len(alone.chi) == 0 and alone.network_seconds > 0
  # DM started at the truth stays there (noise-free data).
  config = reconstructors.configure("ptychonet+dm", model=model, iterations=5,
                                    progress=False)
  started = run("ptychonet+dm", scan, config)
  assert started.method == "ptychonet+dm" and len(started.chi) == 5
  assert started.network_seconds > 0
  mask = metrics.scanned_region(scan.layout, scan.object_shape)
  scores = metrics.complex_metrics(started.object, scan.object, mask)
  assert scores["amplitude_psnr"] > 60


def test_bad_method_and_missing_model(scan):
  with pytest.raises(UserError, match="not one of"):
    run("gd", scan)
  for method in reconstructors.LEARNED:
    with pytest.raises(UserError, match="--saved_model is required"):
      reconstructors.configure(method)
  with pytest.raises(UserError, match="is not a directory"):
    reconstructors.configure("ptychonet", saved_model="/no/such/export")


def test_every_registered_method_names_its_class_and_config():
  for name in reconstructors.NAMES:
    cls = reconstructors.get(name)
    assert cls.name == name and issubclass(cls, base.Reconstructor)
  assert reconstructors.for_config(dm.DMConfig()).name == "dm"
  assert reconstructors.for_config(lsqml.LSQMLConfig()).name == "lsqml"
  # One set of settings configures any method; each takes its own fields.
  settings = dict(iterations=7, alpha=0.5, batch_size=3, noise_model="poisson")
  assert reconstructors.configure("dm", **settings) == dm.DMConfig(
      iterations=7, alpha=0.5)
  assert reconstructors.configure("lsqml", **settings) == lsqml.LSQMLConfig(
      iterations=7, batch_size=3, noise_model="poisson")
  with pytest.raises(UserError, match="iterations"):
    reconstructors.configure("lsqml", iterations=0)


class HalfStep(base.IterativeReconstructor):
  """A method added to the registry in this test: damped error reduction,
  O <- O + 0.5 * (operator's object solution of the Gaussian update)."""

  name = "half_step"
  config_class = epie.EPIEConfig  # any config with the loop's fields

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf

  def initial_state(self, obj, probe):
    return (obj, probe)

  def iterate_chunk(self, state, num, refine):
    obj, probe = state
    op, tf = self.operator, self._tf
    chis, errs = [], []
    for _ in range(num):
      spectra = op.spectra(obj, probe)
      update = op.exit_wave_update(spectra, self.amplitudes)
      new = obj + 0.5 * op.solve_object(update, probe, 1e-3)
      chis.append(self.relative_change(new, obj).numpy())
      errs.append((op.misfit(spectra, self.amplitudes) /
                   self._terms["energy"]).numpy())
      obj = tf.identity(new)
    return (obj, probe), np.stack(chis), np.stack(errs), "python"


def test_a_method_is_one_class_and_one_registry_line(scan, monkeypatch):
  monkeypatch.setitem(reconstructors.METHODS, "half_step",
                      f"{__name__}:HalfStep")
  result = run("half_step", scan, epie.EPIEConfig(iterations=30,
                                                  progress=False))
  assert result.method == "half_step" and len(result.chi) == 30
  assert result.fourier_error[-1] < 0.1 * result.fourier_error[0]


@pytest.mark.slow
def test_run_learned_and_run_solver_over_scans(scan):
  amplitudes = np.stack([scan.amplitudes] * 3)
  truths = np.stack([scan.object] * 3)
  objects, seconds = methods.run_learned(TruthModel(scan.object), amplitudes)
  assert objects.shape == (3,) + tuple(scan.object_shape) and seconds >= 0
  geometry = geometry_lib.Geometry(probe=scan.probe, layout=scan.layout,
                                   object_shape=tuple(scan.object_shape))
  mask = metrics.scanned_region(scan.layout, scan.object_shape)
  config = dm.DMConfig(iterations=20, chunk=5, progress=False)
  objects, per_scan, chi, curve = methods.run_solver(
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
  again, _, _, _ = methods.run_solver(amplitudes, truths, geometry, config,
                                      mask=mask, batch=3)
  np.testing.assert_allclose(again, objects, atol=1e-4)
