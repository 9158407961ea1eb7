"""Datasets of measured scans (data.measured): records without objects,
trained with --loss=physics, refused by what needs an object."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli
from ptychonet_tf.data import measured
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import scanfile
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import trainer
from ptychonet_tf.utils.errors import UserError


def _scans(count, seed=0):
  geo = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))
  rng = np.random.default_rng(seed)
  scans = []
  for _ in range(count):
    obj = (rng.uniform(0.5, 1, geo.object_shape) * np.exp(
        1j * rng.uniform(-1, 0, geo.object_shape))).astype(np.complex64)
    amps = forward.diffraction_amplitudes(obj, geo.probe, geo.layout).numpy()
    scans.append(scanfile.Scan(amplitudes=amps, layout=geo.layout,
                               probe=geo.probe, object_shape=geo.object_shape))
  return scans


def _config(count, num_test=0):
  return measured.MeasuredConfig(files=tuple(f"s{i}.npz" for i in range(count)),
                                 sha256=tuple("0" * 64 for _ in range(count)),
                                 num_test=num_test)


@pytest.fixture(scope="module")
def measured_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("measured") / "data")
  scans = _scans(3)
  stats = measured.write_measured_dataset(scans, scans[0].probe, out,
                                          _config(3, num_test=1))
  assert stats == {"train": 2, "test": 1, "kept": False}
  return out, scans


def test_records_hold_the_amplitudes_and_no_objects(measured_dir):
  out, scans = measured_dir
  info = pipeline.load_dataset_info(out)
  assert not info.objects and info.counts == {"train": 2, "test": 1}
  np.testing.assert_array_equal(info.geometry.layout, scans[0].layout)
  test = list(pipeline.make_dataset(out, "test", 4, shuffle=False))
  assert len(test) == 1 and set(test[0]) == {"amplitudes"}
  np.testing.assert_array_equal(test[0]["amplitudes"][0], scans[2].amplitudes)
  patterns = next(iter(pipeline.make_pattern_dataset(out, "train", 1)))
  assert set(patterns) == {"amplitudes"}
  assert patterns["amplitudes"].shape == (10, 16, 16)
  # Scoring needs an object.
  with pytest.raises(UserError, match="holds measured scans without objects"):
    comparison.read_test_split(out)


def test_rerun_keeps_and_other_scans_are_refused(measured_dir, tmp_path):
  out, scans = measured_dir
  def no_probe_needed():
    raise AssertionError("a kept dataset needs no probe")

  again = measured.write_measured_dataset(scans, no_probe_needed, out,
                                          _config(3, num_test=1))
  assert again["kept"]
  with pytest.raises(UserError, match="holds a dataset made with other "
                     "settings"):
    measured.write_measured_dataset(scans[:2], scans[0].probe, out, _config(2))
  with pytest.raises(UserError, match="must be in"):
    measured.write_measured_dataset(scans, scans[0].probe,
                                    str(tmp_path / "x"), _config(3, 3))
  # One scan: the test split repeats it.
  single = measured.write_measured_dataset(scans[:1], scans[0].probe,
                                           str(tmp_path / "one"), _config(1))
  assert single == {"train": 1, "test": 1, "kept": False}


def test_scans_of_two_geometries_are_refused():
  scans = _scans(1)
  other = scanfile.Scan(amplitudes=scans[0].amplitudes[:9],
                        layout=scans[0].layout[:9], probe=scans[0].probe,
                        object_shape=scans[0].object_shape)
  with pytest.raises(UserError, match="scan b.npz has another geometry than "
                     "a.npz"):
    measured.check_same_geometry([scans[0], other], ["a.npz", "b.npz"])


@pytest.mark.slow
def test_physics_loss_trains_on_measured_scans_and_mse_is_refused(
    measured_dir, tmp_path):
  out, _ = measured_dir
  kw = dict(data_dir=out, network=NetworkConfig(base_channels=4, depth=2,
                                                refine_steps=2),
            epochs=1, refine_epochs=1, batch_size=1, num_images=2,
            export=False, verbose=False)
  with pytest.raises(UserError, match="--loss=mse has nothing to compare "
                     "with; train it with --loss=physics"):
    trainer.Trainer(config_lib.TrainConfig(model_dir=str(tmp_path / "m"), **kw),
                    tf.distribute.get_strategy())
  job = trainer.Trainer(config_lib.TrainConfig(
      model_dir=str(tmp_path / "p"), loss="physics", **kw),
                        tf.distribute.get_strategy())
  scalars = job.train()
  assert np.isfinite(scalars["loss"]) and scalars["misfit"] > 0
  assert np.isnan(scalars["amplitude_psnr"])
  assert "PSNR" not in trainer.format_metrics(scalars)
  with open(os.path.join(tmp_path / "p", "results.json")) as f:
    assert json.load(f)["scans"] == 1


@pytest.mark.slow
def test_make_tfrecords_writes_measured_scans_with_a_refined_probe(tmp_path):
  scans = _scans(2, seed=1)
  paths = []
  for i, scan in enumerate(scans):
    paths.append(str(tmp_path / f"scan{i}.npz"))
    scan.save(paths[-1])
  out = str(tmp_path / "data")
  res = run_cli(["tools/make_tfrecords.py", f"--scans={','.join(paths)}",
                 f"--out_dir={out}", "--probe_iterations=6",
                 "--noprogress"])
  assert res.returncode == 0, res.stderr[-3000:]
  assert "2 train + 2 test measured scans" in res.stdout
  info = pipeline.load_dataset_info(out)
  assert not info.objects
  assert [m["file"] for m in info.identity["measured"]] == [
      "scan0.npz", "scan1.npz"]
  assert info.identity["probe_iterations"] == 6
  # The probe is DM's refinement of the file's, not the file's itself.
  assert not np.allclose(info.geometry.probe, scans[0].probe)
  assert "refining the probe" in res.stdout
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  # Run again, the complete dataset is kept without refining the probe.
  again = run_cli(["tools/make_tfrecords.py", f"--scans={','.join(paths)}",
                   f"--out_dir={out}", "--probe_iterations=6",
                   "--noprogress"])
  assert again.returncode == 0, again.stderr[-3000:]
  assert "already complete, kept" in again.stdout
  assert "refining the probe" not in again.stdout
