"""The training entry point: a step lowers the loss, outputs, resume after SIGKILL,
the run directory's dataset identity (refusal, --restart, --fine_tune), errors."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import (GEOMETRY_FLAGS, REPO, SMALL_NET, run_cli, snapshot,
                     write_tiny)
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.cli import train  # noqa: F401  (defines the flags)
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import writer
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import evaluator
from ptychonet_tf.training import run_dir
from ptychonet_tf.training import trainer
from ptychonet_tf.utils import locks
from ptychonet_tf.utils.errors import UserError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return write_tiny(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def other_data_dir(tmp_path_factory):
  """Another dataset of the same geometry (6 train scans, not 8)."""
  return write_tiny(str(tmp_path_factory.mktemp("tiny6")), num_train=6)


@pytest.fixture(scope="module")
def wide_data_dir(tmp_path_factory):
  """A dataset of another geometry: 32x32 patterns."""
  out = str(tmp_path_factory.mktemp("wide"))
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(32, 32)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=3.0)))
  writer.write_dataset(writer.WriteConfig(simulation=sim, num_train=2,
                                          num_test=1, num_shards=1),
                       out, workers=1, progress=False)
  return out


def quick_config(data_dir, model_dir, **kw):
  """A TrainConfig of one step per epoch on the tiny network."""
  kw = dict(dict(network=NetworkConfig(base_channels=4, depth=2), epochs=1,
                 batch_size=2, steps_per_epoch=1, eval_scans=1, num_images=0,
                 export=False, verbose=False), **kw)
  return config_lib.TrainConfig(data_dir=data_dir, model_dir=str(model_dir),
                                **kw)


def quick_trainer(data_dir, model_dir, **kw):
  return trainer.Trainer(quick_config(data_dir, model_dir, **kw),
                         tf.distribute.get_strategy())


def damaged_copy(data_dir, out, shard_name, offset=5000):
  """A copy of a dataset with 4 bytes flipped inside one shard's first
  payload, as `printf '\\xff\\xff\\xff\\xff' | dd of=SHARD bs=1
  seek=5000 conv=notrunc` does; returns (copy, shard path)."""
  shutil.copytree(data_dir, out)
  shard = os.path.join(out, shard_name)
  with open(shard, "r+b") as f:
    f.seek(offset)
    f.write(b"\xff\xff\xff\xff")
  return out, shard


def train_args(data_dir, model_dir, *extra):
  return ["-m", "ptychonet_tf.train", *GEOMETRY_FLAGS, *SMALL_NET,
          f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--batch_size=2", *extra]


@pytest.mark.parametrize("loss,noise", [
    ("mse", "gaussian"), ("dse", "gaussian"),
    pytest.param("physics", "gaussian", marks=pytest.mark.slow),
    pytest.param("physics", "poisson", marks=pytest.mark.slow),
    pytest.param("mse+physics", "poisson", marks=pytest.mark.slow)])
def test_one_step_lowers_the_loss(data_dir, tmp_path, loss, noise):
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=str(tmp_path / "run"),
      network=NetworkConfig(base_channels=4, depth=2), batch_size=4,
      learning_rate=1e-3, loss=loss, physics_noise=noise, verbose=False,
      export=False)
  keras.utils.set_random_seed(0)  # the Trainer leaves seeding to its caller
  tr = trainer.Trainer(config, tf.distribute.get_strategy())
  batch = next(iter(tr.train_dataset(0)))
  probe = tf.constant(tr.geometry.probe, tf.complex64)

  def batch_loss():
    per_pattern = evaluator.pattern_batch_loss(
        tr.model, batch, config.loss_spec, probe, training=True)
    return float(tf.reduce_mean(per_pattern))

  before = batch_loss()
  tr.task.pattern_step(
      iter(tf.data.Dataset.from_tensors(batch)))
  assert tr.step == 1
  after = batch_loss()
  assert after < before, (loss, before, after)


def event_tags(folder):
  tags = set()
  for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


@pytest.mark.slow
def test_train_cli_outputs_and_tensorboard(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  result = run_cli(train_args(data_dir, model_dir, "--epochs=2",
                              "--num_images=2", "--learning_rate=1e-3"))
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "epoch 2: train loss" in out and "final held-out (2 scans)" in out
  assert "amplitude PSNR" in out and "phase PSNR" in out
  names = set(os.listdir(model_dir))
  assert {"flags.txt", "model.json", "geometry.npz", "results.json",
          "checkpoint", "train", "eval", "export"} <= names
  assert "ckpt-8.index" in names  # 2 epochs x 4 steps
  assert os.path.isfile(model_dir / "export" / "8" / "saved_model.pb")
  flags_text = (model_dir / "flags.txt").read_text()
  assert "--epochs=2" in flags_text and "--batch_size=2" in flags_text
  train_tags = event_tags(str(model_dir / "train"))
  assert {"loss", "learning_rate", "patterns_per_second"} <= train_tags
  eval_tags = event_tags(str(model_dir / "eval"))
  assert {"loss", "data_misfit", "amplitude_psnr", "amplitude_ssim",
          "phase_psnr", "phase_ssim"} <= eval_tags
  assert any(t.startswith("amplitude (truth") for t in eval_tags)
  assert any(t.startswith("phase (truth") for t in eval_tags)
  # --eval_only prints the metrics of the latest checkpoint.
  again = run_cli(train_args(data_dir, model_dir, "--eval_only"))
  assert again.returncode == 0, again.stderr[-2000:]
  assert "eval held-out (2 scans)" in again.stdout


@pytest.mark.slow
def test_resume_after_sigkill(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  args = train_args(data_dir, model_dir, "--epochs=200", "--noexport",
                    "--eval_scans=1", "--num_images=0")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    def recorded_step():
      # The checkpoint state file is what a resume reads: a save writes
      # ckpt-N.* first and records it there last, so a kill in between
      # leaves ckpt-N.index beside a state that still names the step before.
      latest = run_dir.latest_checkpoint(str(model_dir))
      return int(latest.rsplit("-", 1)[1]) if latest else 0

    deadline = time.time() + 240
    while time.time() < deadline and recorded_step() < 8:  # two epochs of 4
      time.sleep(0.5)
    assert proc.poll() is None, "training ended early"
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  steps = sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                 for p in glob.glob(str(model_dir / "ckpt-*.index")))
  assert steps and all(s % 4 == 0 for s in steps)
  last = recorded_step()
  assert last >= 8 and last in steps
  epochs = last // 4 + 1
  result = run_cli(train_args(data_dir, model_dir, f"--epochs={epochs}",
                              "--noexport", "--eval_scans=1"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming at step {last}" in result.stdout
  assert f"epoch {epochs}/{epochs}" in result.stdout
  assert f"epoch {epochs - 1}/" not in result.stdout  # done epochs not redone
  assert os.path.isfile(model_dir / f"ckpt-{epochs * 4}.index")


def test_geometry_flags_are_checked_against_the_dataset(data_dir):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  geometry = pipeline.load_dataset_info(data_dir).geometry
  matching = dict(probe_size="16,16", scan="fermat", scan_count="10",
                  scan_step="1.5")
  with flagsaver.as_parsed(**matching):
    experiment_flags.check_geometry_flags(geometry, data_dir)  # consistent: no error
  with flagsaver.as_parsed(**dict(matching, scan_count="12")):
    with pytest.raises(UserError, match=r"--scan_count=12 .*10 positions"):
      experiment_flags.check_geometry_flags(geometry, data_dir)
  with flagsaver.as_parsed(**dict(matching, probe_diameter="0.3")):
    with pytest.raises(UserError, match="--probe_diameter=0.3 describe another"):
      experiment_flags.check_geometry_flags(geometry, data_dir)
  with flagsaver.as_parsed(probe_size="16"):  # one value means square
    experiment_flags.check_geometry_flags(geometry, data_dir)


def test_config_validation():
  base = dict(data_dir="d", model_dir="m")
  config_lib.TrainConfig(**base).validate()
  for bad, fragment in ((dict(batch_size=0), "batch_size=0"),
                        (dict(epochs=0), "epochs=0"),
                        (dict(learning_rate=0.0), "learning_rate"),
                        (dict(beta1=1.0), "beta1"),
                        (dict(loss="l1"), "loss 'l1' is not one of"),
                        (dict(model_dir=""), "model_dir")):
    with pytest.raises(UserError, match=fragment):
      config_lib.TrainConfig(**dict(base, **bad)).validate()


def test_cosine_schedule_decays_the_network_rate_to_zero(data_dir, tmp_path):
  tr = quick_trainer(data_dir, tmp_path / "run", epochs=4, steps_per_epoch=2,
                     lr_schedule="cosine", learning_rate=1e-3)
  optimizer = tr.optimizer
  rates = []
  for step in (0, 4, 8, 20):  # a function of the checkpointed global step
    tr.global_step.assign(step)
    rates.append(float(np.asarray(optimizer.learning_rate)))
  np.testing.assert_allclose(rates, [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
  constant = quick_trainer(data_dir, tmp_path / "run2")
  constant.global_step.assign(8)
  assert float(np.asarray(constant.optimizer.learning_rate)) == pytest.approx(
      2e-4)
  with pytest.raises(UserError, match="lr_schedule 'step' is not one of"):
    quick_config(data_dir, tmp_path / "run3", lr_schedule="step").validate()


@pytest.mark.slow
def test_held_out_evaluation_every_k_epochs_and_after_the_last(
    data_dir, tmp_path, capsys, monkeypatch):
  """--eval_every=2 over 3 epochs: evaluated after epochs 2 and 3 only."""
  tr = quick_trainer(data_dir, tmp_path / "run", epochs=3, eval_every=2,
                     verbose=True)
  calls = []
  evaluator = tr.evaluator

  def counting_evaluator():
    held_out = evaluator()

    def run():
      calls.append(int(tr.global_step.numpy()))
      return held_out()
    return run
  monkeypatch.setattr(tr, "evaluator", counting_evaluator)
  scalars = tr.train()
  assert calls == [2, 3]  # one step per epoch
  out = capsys.readouterr().out
  assert "epoch 1: train loss" in out and "every 2 epochs" in out
  assert "epoch 2: train loss" in out and "epoch 3: train loss" in out
  assert scalars["step"] == 3 and np.isfinite(scalars["amplitude_psnr"])
  with pytest.raises(UserError, match="eval_every=0 must be >= 1"):
    quick_config(data_dir, tmp_path / "run2", eval_every=0).validate()


def test_mixed_precision_trainer_leaves_the_global_policy(data_dir, tmp_path):
  """mixed_precision=True gives the model a bfloat16 encoder-decoder; the
  global Keras policy stays float32 and the loss and outputs are float32."""
  assert keras.config.dtype_policy().name == "float32"
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=str(tmp_path / "run"),
      network=NetworkConfig(base_channels=4, depth=2), batch_size=2,
      mixed_precision=True, verbose=False, export=False)
  tr = trainer.Trainer(config, tf.distribute.get_strategy())
  assert keras.config.dtype_policy().name == "float32"
  model = tr.model
  assert model.compute_policy == "mixed_bfloat16"
  assert tr.network_config.mixed_precision
  layers = {l.name: l.compute_dtype for l in model.patch_network.layers
            if not isinstance(l, keras.layers.InputLayer)}
  assert layers.pop("out") == "float32"
  assert set(layers.values()) == {"bfloat16"}, layers
  assert {v.dtype for v in model.variables} == {"float32"}
  batch = next(iter(tr.train_dataset(0)))
  loss = tr.task.pattern_step(iter(tf.data.Dataset.from_tensors(batch)))
  assert loss.dtype == tf.float32 and tf.math.is_finite(loss)
  n = tr.geometry.num_positions
  out = model(batch["amplitudes"][:n][None])
  assert {v.dtype for v in out.values()} == {tf.float32}
  assert keras.config.dtype_policy().name == "float32"
  # The network config cannot contradict the run's setting.
  with pytest.raises(UserError, match="mixed_precision"):
    config_lib.TrainConfig(
        data_dir=data_dir, model_dir="m",
        network=NetworkConfig(mixed_precision=True)).validate()


def test_damaged_shard_is_named_in_training_and_evaluation(data_dir, tmp_path):
  damaged, shard = damaged_copy(data_dir, str(tmp_path / "train_damaged"),
                                "train-00000-of-00002.tfrecord")
  tr = quick_trainer(damaged, tmp_path / "run")
  with pytest.raises(UserError) as raised:
    tr.train()
  message = str(raised.value)
  assert message.startswith(
      f"TFRecord shard {shard} is corrupt: record 0 fails its checksum; run "
      f"python tools/check_tfrecords.py --data_dir={damaged} --parse, then ")
  assert "\n" not in message
  # The held-out evaluation (each epoch, and --eval_only) reads the test split.
  damaged, shard = damaged_copy(data_dir, str(tmp_path / "test_damaged"),
                                "test-00001-of-00002.tfrecord")
  tr = quick_trainer(damaged, tmp_path / "run2")
  with pytest.raises(UserError, match=re.escape(
      f"TFRecord shard {shard} is corrupt: record 0 fails its checksum")):
    tr.evaluator()()


def untrained_run(data_dir, model_dir, step=1, **kw):
  """A run directory as a run of `step` steps leaves it, without training:
  the Trainer's own files and a checkpoint of its untrained model."""
  tr = quick_trainer(data_dir, model_dir, **kw)
  with run_dir.locked(str(model_dir)):
    tr.prepare_run_dir()
    run_dir.save_model_files(str(model_dir), tr.model, tr.geometry)
    tr.global_step.assign(step)
    tr.save()
  return tr


def test_model_dir_of_another_dataset_is_refused(data_dir, other_data_dir,
                                                 tmp_path):
  model_dir = tmp_path / "run"
  untrained_run(data_dir, model_dir)
  (model_dir / "flags.txt").write_text("--the first run's flags\n")
  with open(model_dir / run_dir.RUN_FILE) as f:
    run = json.load(f)
  assert run["dataset"]["data_dir"] == os.path.abspath(data_dir)
  assert run["dataset"]["identity"]["num_train"] == 8
  before = snapshot(model_dir)
  assert {"flags.txt", "model.json", "geometry.npz", "checkpoint",
          "ckpt-1.index", "run.json"} <= set(before)
  # Another dataset: refused before anything is written.
  with pytest.raises(UserError, match=(
      r"model_dir .*run holds a run on another dataset \(.*; num_train: 8 "
      r"there, 6 here\); use a new --model_dir, --fine_tune to start from its "
      r"weights, or --restart to start over")) as raised:
    quick_trainer(other_data_dir, model_dir).prepare_run_dir()
  assert "\n" not in str(raised.value)
  assert snapshot(model_dir) == before
  # The same dataset with another network: refused too, in one line.
  with pytest.raises(UserError, match=(
      r"trained with other network settings \(base_channels: 4 there, 8 "
      r"here\); use the flags in its flags.txt, a new --model_dir, or "
      r"--restart")) as raised:
    quick_trainer(data_dir, model_dir,
                  network=NetworkConfig(base_channels=8, depth=2)
                  ).prepare_run_dir()
  assert "\n" not in str(raised.value)
  assert snapshot(model_dir) == before
  # The same dataset and network: it resumes, at the checkpointed step.
  again = quick_trainer(data_dir, model_dir, epochs=2)
  assert again.prepare_run_dir() == 1 and again.step == 1


def test_checkpoints_that_cannot_resume_are_named(data_dir, tmp_path):
  """A checkpoint without the global step (an older release's) or with a
  truncated data file ends in one line naming it."""
  model_dir = tmp_path / "run"
  tr = untrained_run(data_dir, model_dir)
  data = glob.glob(str(model_dir / "ckpt-1.data-*"))[0]
  with open(data, "r+b") as f:
    f.truncate(16)
  with pytest.raises(UserError, match=r"checkpoint .*ckpt-1 cannot be read "
                     r"\(truncated or damaged\)") as raised:
    quick_trainer(data_dir, model_dir).prepare_run_dir()
  assert "\n" not in str(raised.value)
  with pytest.raises(UserError, match=r"--init_from: checkpoint .*ckpt-1 "
                     r"cannot be read \(truncated or damaged\)"):
    quick_trainer(data_dir, tmp_path / "new", init_from=str(model_dir)
                  ).prepare_run_dir()
  older = tf.train.Checkpoint(model=tr.model, optimizer=tr.optimizer)
  older.write(str(model_dir / "ckpt-1"))
  with pytest.raises(UserError, match=r"checkpoint .*ckpt-1 holds no step "
                     r"counter \(an older release wrote it\)"):
    quick_trainer(data_dir, model_dir).prepare_run_dir()


def test_fine_tune_and_restart_move_the_old_run_aside(data_dir, other_data_dir,
                                                      tmp_path):
  model_dir = tmp_path / "run"
  untrained_run(data_dir, model_dir)
  before = snapshot(model_dir)
  del before[locks.LOCK_NAME]  # the lock stays where it is
  old_model, _, old_step = run_dir.load_trained_model(str(model_dir))
  assert old_step == 1
  # --fine_tune: the old weights, a fresh optimizer at step 0, the new dataset.
  tr = quick_trainer(other_data_dir, model_dir, fine_tune=True)
  assert tr.prepare_run_dir() == 0 and tr.step == 0
  for new, old in zip(tr.model.get_weights(), old_model.get_weights()):
    np.testing.assert_array_equal(new, old)
  previous = glob.glob(str(model_dir / "previous-*"))
  assert len(previous) == 1
  assert snapshot(previous[0]) == before  # the old run, whole and unchanged
  assert sorted(os.listdir(model_dir)) == sorted(
      ["run.json", locks.LOCK_NAME, os.path.basename(previous[0])])
  with open(model_dir / run_dir.RUN_FILE) as f:
    run = json.load(f)
  assert run["dataset"]["data_dir"] == os.path.abspath(other_data_dir)
  assert run["fine_tuned_from"]["step"] == 1
  assert run["fine_tuned_from"]["checkpoint"] == os.path.join(previous[0],
                                                              "ckpt-1")
  assert run["fine_tuned_from"]["dataset"]["data_dir"] == os.path.abspath(
      data_dir)
  tr.global_step.assign(1)  # as after its first step
  tr.save()
  # The same command again (say after a kill) resumes the fine-tuned run.
  again = quick_trainer(other_data_dir, model_dir, fine_tune=True, epochs=2)
  assert again.prepare_run_dir() == 1
  assert len(glob.glob(str(model_dir / "previous-*"))) == 1
  # --restart: a fresh run on any dataset; the fine-tuned run moves aside.
  fresh = quick_trainer(data_dir, model_dir, restart=True)
  assert fresh.prepare_run_dir() == 0
  assert len(glob.glob(str(model_dir / "previous-*"))) == 2
  assert run_dir.latest_checkpoint(str(model_dir)) is None
  with open(model_dir / run_dir.RUN_FILE) as f:
    run = json.load(f)
  assert run["dataset"]["data_dir"] == os.path.abspath(data_dir)
  assert "fine_tuned_from" not in run
  with pytest.raises(UserError, match="exclude each other"):
    quick_config(data_dir, model_dir, restart=True, fine_tune=True).validate()


def test_fine_tune_refuses_weights_that_do_not_fit(data_dir, other_data_dir,
                                                   wide_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  untrained_run(data_dir, model_dir)
  before = snapshot(model_dir)
  with pytest.raises(UserError, match=(
      r"--fine_tune: the run in .* was trained on 16x16 patterns, .* has "
      r"32x32 \(another geometry\)")):
    quick_trainer(wide_data_dir, model_dir, fine_tune=True).prepare_run_dir()
  with pytest.raises(UserError, match=(
      r"--fine_tune: checkpoint .*ckpt-1 does not fit the network these flags "
      r"build")) as raised:
    quick_trainer(other_data_dir, model_dir, fine_tune=True,
                  network=NetworkConfig(base_channels=8, depth=2)
                  ).prepare_run_dir()
  assert "\n" not in str(raised.value)
  with pytest.raises(UserError, match=r"another dataset \(.*; probe_shape: "
                     r"\[16, 16\] there, \[32, 32\] here, "):
    quick_trainer(wide_data_dir, model_dir).prepare_run_dir()
  with pytest.raises(UserError, match="holds no checkpoint to start from"):
    quick_trainer(data_dir, tmp_path / "empty", fine_tune=True
                  ).prepare_run_dir()
  assert snapshot(model_dir) == before
  assert not os.path.exists(tmp_path / "empty")


def test_init_from_starts_a_new_run_from_another_runs_weights(
    data_dir, other_data_dir, tmp_path):
  source = tmp_path / "source"
  untrained_run(data_dir, source)
  before = snapshot(source)
  old_model, _, _ = run_dir.load_trained_model(str(source))
  model_dir = tmp_path / "run"
  tr = quick_trainer(other_data_dir, model_dir, init_from=str(source),
                     loss="physics")
  assert tr.prepare_run_dir() == 0 and tr.step == 0
  for new, old in zip(tr.model.get_weights(), old_model.get_weights()):
    np.testing.assert_array_equal(new, old)
  with open(model_dir / run_dir.RUN_FILE) as f:
    run = json.load(f)
  assert run["dataset"]["data_dir"] == os.path.abspath(other_data_dir)
  assert run["initialized_from"]["run"] == str(source)
  assert run["initialized_from"]["step"] == 1
  assert run["initialized_from"]["dataset"]["data_dir"] == os.path.abspath(
      data_dir)
  assert snapshot(source) == before  # the source untouched
  tr.global_step.assign(1)  # as after its first step
  tr.save()
  # The same command again (say after a kill) resumes the run it started,
  # however the source is spelled.
  resumed = quick_trainer(other_data_dir, model_dir,
                          init_from=str(source) + "/", loss="physics",
                          epochs=2)
  assert resumed.prepare_run_dir() == 1
  # From another source there, it is refused ...
  with pytest.raises(UserError, match="--init_from starts a new run, but "
                     "model_dir .* holds one"):
    quick_trainer(other_data_dir, model_dir,
                  init_from=str(tmp_path / "elsewhere")).prepare_run_dir()
  # ... unless with --restart, which moves it aside first.
  again = quick_trainer(other_data_dir, model_dir, init_from=str(source),
                        restart=True)
  assert again.prepare_run_dir() == 0
  assert len(glob.glob(str(model_dir / "previous-*"))) == 1


def test_init_from_refusals(data_dir, tmp_path):
  source = tmp_path / "source"
  untrained_run(data_dir, source)
  with pytest.raises(UserError, match="is not a directory"):
    quick_trainer(data_dir, tmp_path / "a", init_from=str(tmp_path / "nope")
                  ).prepare_run_dir()
  (tmp_path / "export_only").mkdir()
  with pytest.raises(UserError, match="holds no checkpoint and no SavedModel; "
                     "expected the --model_dir of an earlier training run"):
    quick_trainer(data_dir, tmp_path / "b",
                  init_from=str(tmp_path / "export_only")).prepare_run_dir()
  with pytest.raises(UserError, match=r"--init_from: checkpoint .*ckpt-1 does "
                     "not fit the network these flags build"):
    quick_trainer(data_dir, tmp_path / "c", init_from=str(source),
                  network=NetworkConfig(base_channels=8, depth=2)
                  ).prepare_run_dir()
  with pytest.raises(UserError, match="exclude each other"):
    quick_config(data_dir, tmp_path / "d", init_from=str(source),
                 fine_tune=True).validate()
  for name in "abcd":
    assert not os.path.exists(tmp_path / name)


@pytest.mark.slow
def test_init_from_a_saved_model_export(data_dir, other_data_dir,
                                        wide_data_dir, tmp_path, capsys):
  source = tmp_path / "source"
  exports = tmp_path / "exports"
  tr = untrained_run(data_dir, source)
  export_lib.export_saved_model(tr.model, tr.geometry.probe, str(exports), 1)
  old_model, _, _ = run_dir.load_trained_model(str(source))
  for given in (exports, exports / "1"):  # an export dir or one version
    model_dir = tmp_path / f"run-{given.name}"
    tr = quick_trainer(other_data_dir, model_dir, init_from=str(given),
                       loss="physics", verbose=True)
    assert tr.prepare_run_dir() == 0 and tr.step == 0
    for new, old in zip(tr.model.get_weights(), old_model.get_weights()):
      np.testing.assert_array_equal(new, old)
    with open(model_dir / run_dir.RUN_FILE) as f:
      run = json.load(f)["initialized_from"]
    assert run["run"] == str(given) and run["step"] == 1
    assert run["saved_model"] == str(exports / "1")
    assert f"the SavedModel {exports / '1'}" in capsys.readouterr().out
  with pytest.raises(UserError, match="does not fit the network these "
                     "flags build"):
    quick_trainer(data_dir, tmp_path / "wider", init_from=str(exports),
                  network=NetworkConfig(base_channels=8, depth=2)
                  ).prepare_run_dir()
  with pytest.raises(UserError, match=r"takes 16x16 patterns, .* has 32x32"):
    quick_trainer(wide_data_dir, tmp_path / "wide", init_from=str(exports)
                  ).prepare_run_dir()
  assert not os.path.exists(tmp_path / "wider")
  assert not os.path.exists(tmp_path / "wide")


def test_older_run_dir_without_run_json_is_adopted(data_dir, wide_data_dir,
                                                   tmp_path, capsys):
  model_dir = tmp_path / "run"
  untrained_run(data_dir, model_dir)
  os.remove(model_dir / run_dir.RUN_FILE)  # as runs before run.json were
  tr = quick_trainer(data_dir, model_dir, epochs=2, verbose=True)
  assert tr.prepare_run_dir() == 1
  out = capsys.readouterr().out
  assert (f"note: model_dir {model_dir} has no run.json (an older run); "
          f"recording {os.path.abspath(data_dir)} as its dataset") in out
  with open(model_dir / run_dir.RUN_FILE) as f:
    assert json.load(f)["dataset"]["data_dir"] == os.path.abspath(data_dir)
  # An older run whose geometry.npz is not the dataset's is not adopted.
  os.remove(model_dir / run_dir.RUN_FILE)
  before = snapshot(model_dir)
  with pytest.raises(UserError, match="holds a run on another dataset"):
    quick_trainer(wide_data_dir, model_dir).prepare_run_dir()
  assert snapshot(model_dir) == before


def error_line(result):
  """The `error: ...` line of a failed run (kept short: under 400 chars)."""
  line = result.stderr.strip().splitlines()[-1]
  assert len(line) < 400, line
  return line


@pytest.mark.slow
def test_cli_fine_tune_moves_the_old_run_aside(data_dir, other_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  first = run_cli(train_args(data_dir, model_dir, "--epochs=1", "--noexport",
                             "--num_images=0", "--eval_scans=1"))
  assert first.returncode == 0, first.stderr[-3000:]
  before = snapshot(model_dir)
  assert {"flags.txt", "model.json", "geometry.npz", "run.json",
          "ckpt-4.index"} <= set(before)
  # Refusals of another dataset or network: rows of tests/test_bad_inputs.py.
  # --fine_tune on the other dataset runs, from step 0.
  result = run_cli(train_args(other_data_dir, model_dir, "--epochs=1",
                              "--noexport", "--fine_tune", "--eval_scans=1"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "fine-tuning the weights of step 4" in result.stdout
  assert "resuming" not in result.stdout
  assert os.path.isfile(model_dir / "ckpt-3.index")  # 6 scans / 2 per step
  (previous,) = glob.glob(str(model_dir / "previous-*"))
  del before[locks.LOCK_NAME]  # the lock stays in model_dir
  assert snapshot(previous) == before
  assert os.path.isfile(model_dir / locks.LOCK_NAME)
