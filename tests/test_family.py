"""A family of scan geometries: the draws, the datasets that hold each scan's
own probe and positions, their pipeline, and a model trained on them."""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli, snapshot
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import writer
from ptychonet_tf.model import network
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics import family as family_lib
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.physics import simulator
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import trainer
from ptychonet_tf.utils.errors import UserError

# A small family: 16x16 patterns in objects up to 40x40.
PROBE_SHAPE = (16, 16)
FAMILY = family_lib.FamilyConfig(max_object=(40, 40))


def test_draws_are_seeded_inside_the_object_and_cover_the_kinds():
  scans = [family_lib.draw_scan(np.random.default_rng(i), PROBE_SHAPE, FAMILY)
           for i in range(60)]
  again = family_lib.draw_scan(np.random.default_rng(3), PROBE_SHAPE, FAMILY)
  np.testing.assert_array_equal(again.probe, scans[3].probe)
  np.testing.assert_array_equal(again.positions, scans[3].positions)
  for scan in scans:
    assert len(scan.positions) >= family_lib.MIN_POSITIONS
    assert scan.object_shape[0] <= 40 and scan.object_shape[1] <= 40
    # The stored positions give the stored layout (the run-time frame).
    layout, shape = layouts.layout_from_positions(scan.positions, PROBE_SHAPE)
    np.testing.assert_array_equal(layout, scan.layout)
    assert shape == scan.object_shape
    assert scan.probe.dtype == np.complex64
  kinds = " ".join(s.description for s in scans)
  for kind in family_lib.PROBES + family_lib.LAYOUTS:
    assert kind in kinds
  # Probes differ from scan to scan.
  assert np.abs(scans[0].probe - scans[1].probe).max() > 0.1


def test_aberrations_change_the_phase_only():
  probe = probe_lib.make_probe((32, 32), "pinhole", 0.5)
  np.testing.assert_allclose(probe_lib.aberrate(probe), probe, atol=1e-7)
  aberrated = probe_lib.aberrate(probe, 0.7, (0.3, -0.2), (0.1, 0.4))
  np.testing.assert_allclose(np.abs(aberrated), np.abs(probe), atol=1e-6)
  # Defocus alone: 0.7 rad at the RMS radius, quadratic about the centre.
  y, x, rms = probe_lib.rms_frame(probe)
  lit = np.abs(probe) > 1e-3
  phase = np.angle(probe_lib.aberrate(probe, 0.7) * np.conj(probe))
  expected = np.angle(np.exp(0.7j * (y ** 2 + x ** 2) / rms ** 2))
  np.testing.assert_allclose(phase[lit], expected[lit], atol=1e-4)


def test_family_config_refusals():
  with pytest.raises(UserError, match="--family_probes"):
    dataclasses.replace(FAMILY, probes=("laser",)).validate(PROBE_SHAPE)
  with pytest.raises(UserError, match="twice the probe"):
    dataclasses.replace(FAMILY, max_object=(20, 40)).validate(PROBE_SHAPE)


def write_family(out, num_train=4, num_test=2, photons=0.0):
  """A family dataset (nominal geometry: a 16x16 probe on Fermat 40 over
  40x40-ish) written in-process."""
  sim = simulator.SimulationConfig(
      geometry=geometry_lib.GeometryConfig(
          probe=geometry_lib.ProbeConfig(size=PROBE_SHAPE),
          scan=geometry_lib.ScanConfig(pattern="fermat", count=40, step=1.8)),
      photons=photons, family=family_lib.FamilyConfig())
  config = writer.WriteConfig(simulation=sim, num_train=num_train,
                              num_test=num_test, num_shards=2,
                              images="procedural")
  writer.write_dataset(config, out, workers=1, progress=False)
  return out


@pytest.mark.slow
def test_family_records_hold_each_scans_own_geometry(tmp_path):
  out = write_family(str(tmp_path / "family"))
  info = pipeline.load_dataset_info(out)
  assert info.family["max_object"] == list(info.geometry.object_shape)
  first = snapshot(out)
  scans = list(pipeline.make_dataset(out, "train", 1, shuffle=False))
  assert len(scans) == 4
  assert sorted(int(scan["index"][0]) for scan in scans) == [0, 1, 2, 3]
  family = family_lib.FamilyConfig(**info.family)
  sizes = set()
  for scan in scans:
    planes = scan["probe"][0].numpy()
    probe = planes[..., 0] + 1j * planes[..., 1]
    # Each scan is its index's draw.
    draw = family_lib.draw_scan(
        simulator.scan_rng(0, "train", int(scan["index"][0])), PROBE_SHAPE,
        family)
    np.testing.assert_allclose(probe, draw.probe, atol=1e-7)
    np.testing.assert_array_equal(scan["positions"][0], draw.positions)
    layout, shape = layouts.layout_from_positions(
        scan["positions"][0].numpy(), PROBE_SHAPE)
    obj = scan["object_amplitude"][0].numpy() * np.exp(
        1j * scan["object_phase"][0].numpy())
    assert obj.shape == shape
    sizes.add((len(layout), shape))
    expected = forward.diffraction_amplitudes(
        tf.constant(obj[None], tf.complex64), probe.astype(np.complex64),
        layout).numpy()[0]
    np.testing.assert_allclose(scan["amplitudes"][0], expected, atol=1e-5)
  assert len(sizes) > 1
  # check_tfrecords --parse reads every record in its own shape.
  assert pipeline.find_damaged_record(info, "train", parse=True) is None
  # Whole-scan batches hold one scan; more is refused in one line.
  with pytest.raises(UserError, match="one scan"):
    pipeline.make_dataset(out, "train", 2)
  # Patterns carry their scan's probe and the object under their window.
  batch = next(iter(pipeline.make_pattern_dataset(out, "train", 1,
                                                  shuffle_scans=0)))
  assert batch["probe"].shape[1:] == (16, 16, 2)
  # Re-running the writer keeps every shard; a rewrite gives the same bytes.
  for name in os.listdir(out):
    if name.startswith("train-00000"):
      os.remove(os.path.join(out, name))
  write_family(out)
  assert snapshot(out) == first


def test_pattern_probes_are_the_networks_probe_channels():
  probe = probe_lib.make_probe(PROBE_SHAPE, "pinhole", 0.5)
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 4),
                                                PROBE_SHAPE)
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(NetworkConfig(base_channels=4, depth=2,
                                            probe_input=True), geometry)
  patterns = np.random.default_rng(0).uniform(0, 2, (5, 16, 16)).astype(
      np.float32)
  other = probe_lib.make_probe(PROBE_SHAPE, "zone_plate", 0.4) * 3
  # Each pattern with its own probe = each pattern with that scan's probe.
  probes = tf.constant(np.stack([other, other, probe, probe, other]))
  mixed = model.predict_pattern_patches(patterns, probes=probes)
  for index, given in ((0, other), (2, probe)):
    alone = model.patch_tensor(patterns[index:index + 1],
                               scale=network.input_scale(tf.constant(given)),
                               probe=tf.constant(given))
    np.testing.assert_allclose(mixed["amplitude"][index], alone[0, ..., 0],
                               atol=1e-5)
  # The training probe's patterns give the model's own answer.
  own = model.predict_pattern_patches(patterns[2:4])
  np.testing.assert_allclose(mixed["phase"][2:4], own["phase"], atol=1e-5)


@pytest.mark.slow
def test_a_family_model_trains_evaluates_and_serves_any_scan(tmp_path):
  data = write_family(str(tmp_path / "family"), num_train=4, num_test=2)
  common = [f"--data_dir={data}", f"--model_dir={tmp_path / 'run'}",
            "--base_channels=4", "--depth=2", "--batch_size=1",
            "--probe_input", "--refine_steps=4", "--refine_groups=2",
            "--refine_epochs=1", "--refine_steps_per_epoch=2", "--epochs=1"]
  # More than one scan per refinement step: refused before anything is
  # built (the command line prints the UserError as one line).
  config = config_lib.TrainConfig(
      data_dir=data, model_dir=str(tmp_path / "refused"), refine_batch_size=2,
      network=NetworkConfig(base_channels=4, depth=2, refine_steps=4,
                            refine_groups=2))
  with pytest.raises(UserError, match="--refine_batch_size=1"):
    trainer.Trainer(config, tf.distribute.get_strategy())
  result = run_cli(["-m", "ptychonet_tf.train", *common,
                    "--refine_batch_size=1",
                    f"--export_dir={tmp_path / 'export'}"], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "amplitude PSNR" in result.stdout
  export = tmp_path / "export"
  version = sorted(os.listdir(export))[-1]
  fn = tf.saved_model.load(str(export / version)).signatures["any_scan"]
  scan = next(iter(pipeline.make_dataset(data, "test", 1, shuffle=False)))
  out = fn(amplitudes=scan["amplitudes"], positions=scan["positions"],
           probe=scan["probe"][0])
  assert out["amplitude"].shape[1:] == scan["object_amplitude"].shape[1:]
  assert np.all(np.isfinite(out["phase"].numpy()))
