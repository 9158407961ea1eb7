"""The training entry point: a step lowers the loss, outputs, resume after SIGKILL, errors."""
import glob
import os
import signal
import subprocess
import sys
import time

from absl import flags
from absl.testing import flagsaver
import keras
import pytest
import tensorflow as tf

from helpers import (GEOMETRY_FLAGS, REPO, SMALL_NET, assert_one_line_error,
                     run_cli, write_tiny)
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.cli import train  # noqa: F401  (defines the flags)
from ptychonet_tf.data import pipeline
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import evaluator
from ptychonet_tf.training import trainer
from ptychonet_tf.utils.errors import UserError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def train_args(data_dir, model_dir, *extra):
  return ["-m", "ptychonet_tf.train", *GEOMETRY_FLAGS, *SMALL_NET,
          f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--batch_size=2", *extra]


def test_one_step_lowers_the_loss(data_dir, tmp_path):
  for loss in ("mse", "dse"):
    config = config_lib.TrainConfig(
        data_dir=data_dir, model_dir=str(tmp_path / loss),
        network=NetworkConfig(base_channels=4, depth=2), batch_size=4,
        learning_rate=1e-3, loss=loss, verbose=False, export=False)
    keras.utils.set_random_seed(0)  # the Trainer leaves seeding to its caller
    tr = trainer.Trainer(config, tf.distribute.get_strategy())
    batch = next(iter(tr.train_dataset(0)))
    probe = tf.constant(tr.geometry.probe, tf.complex64)

    def batch_loss():
      per_pattern = evaluator.pattern_batch_loss(
          tr.model, batch, loss, probe, 1.0, training=True)
      return float(tf.reduce_mean(per_pattern))

    before = batch_loss()
    tr._train_step(  # pylint: disable=protected-access
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
  assert {"loss", "amplitude_psnr", "amplitude_ssim", "phase_psnr",
          "phase_ssim"} <= eval_tags
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
    deadline = time.time() + 240
    while time.time() < deadline and not glob.glob(
        str(model_dir / "ckpt-8.index")):  # two epochs of 4 steps done
      time.sleep(0.5)
    assert proc.poll() is None, "training ended early"
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  steps = sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                 for p in glob.glob(str(model_dir / "ckpt-*.index")))
  assert steps and steps[-1] >= 8 and all(s % 4 == 0 for s in steps)
  last = steps[-1]
  epochs = last // 4 + 1
  result = run_cli(train_args(data_dir, model_dir, f"--epochs={epochs}",
                              "--noexport", "--eval_scans=1"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming at step {last}" in result.stdout
  assert f"epoch {epochs}/{epochs}" in result.stdout
  assert f"epoch {epochs - 1}/" not in result.stdout  # done epochs not redone
  assert os.path.isfile(model_dir / f"ckpt-{epochs * 4}.index")


@pytest.mark.slow
def test_bad_inputs_end_in_one_line(data_dir, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  result = run_cli(train_args(str(empty), tmp_path / "m1"))
  assert_one_line_error(result, str(empty), "dataset.json")
  # A dataset whose shards are gone.
  broken = tmp_path / "broken"
  write_tiny(str(broken), num_train=2, num_test=1, num_shards=1)
  for shard in glob.glob(str(broken / "*.tfrecord")):
    os.remove(shard)
  result = run_cli(train_args(str(broken), tmp_path / "m2"))
  assert_one_line_error(result, "train-00000-of-00001.tfrecord")
  # A flag that contradicts the dataset's geometry.
  result = run_cli(train_args(data_dir, tmp_path / "m3", "--probe_size=32,32"))
  assert_one_line_error(result, "--probe_size=32,32", "16x16")


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
                        (dict(loss="l1"), "loss=l1"),
                        (dict(model_dir=""), "model_dir")):
    with pytest.raises(UserError, match=fragment):
      config_lib.TrainConfig(**dict(base, **bad)).validate()


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
  loss = tr._train_step(iter(tf.data.Dataset.from_tensors(batch)))  # pylint: disable=protected-access
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
