r"""Trains PtychoNet on a TFRecord dataset; resumes from the latest checkpoint.

  python -m ptychonet_tf.train --flagfile=configs/small_dense.flags \
      --data_dir=tfrecords/small_dense --model_dir=runs/small_dense \
      [--epochs=8 --batch_size=4 --loss=dse --mixed_precision \
       --distribution=auto|none|mirrored|multi_worker --export_dir=...]

Flags after the flagfile override it. The resolved flags go to
<model_dir>/flags.txt; checkpoints, TensorBoard logs (train/, eval/),
results.json and, at the end, a SavedModel (<export_dir>/<step>/) to
model_dir. Killed and started again with the same flags, a run continues from
its last checkpoint (taken at every epoch end). With --eval_only it prints the
held-out PSNR/SSIM of the latest checkpoint. See docs/training.md.

The run directory records its dataset (run.json): a start on another dataset
or with other network settings is refused before anything is written, unless
--restart (start over; the old run is moved to <model_dir>/previous-<time>/)
or --fine_tune (start from the old run's weights on the new dataset, at step 0;
the old run is moved aside too). --init_from=RUN_DIR (or a SavedModel
export) starts a new run from another run's weights. --restart and
--fine_tune refuse a model_dir that holds a dataset or files no run wrote.

While it runs, train holds <model_dir>/.lock: a second train on the same
model_dir is refused in one line naming the first one's PID.
"""
import contextlib
import os

from absl import flags
from absl import logging

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError, report_user_errors
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training import run_dir
from ptychonet_tf.training.config import TrainConfig

experiment_flags.define_experiment_flags()
experiment_flags.define_setting_flags(TrainConfig, command="train")
FLAGS = flags.FLAGS


def train_config():
  """The TrainConfig of the parsed flags."""
  network = experiment_flags.config_from_flags(
      NetworkConfig, amplitude_range=(FLAGS.amp_min, FLAGS.amp_max),
      phase_range=(FLAGS.phase_min, FLAGS.phase_max))
  return experiment_flags.config_from_flags(
      TrainConfig, data_dir=FLAGS.data_dir, model_dir=FLAGS.model_dir,
      export_dir=FLAGS.export_dir, network=network)


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("data_dir", "model_dir")
  experiment_flags.require_dataset(FLAGS.data_dir)
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  config = train_config().validate()
  if os.path.exists(config.model_dir) and not os.path.isdir(config.model_dir):
    raise UserError(f"--model_dir={config.model_dir} is a file; expected a "
                    f"directory")
  info = pipeline.load_dataset_info(config.data_dir)
  for split in ("train", "test"):
    pipeline.verify_shards(info, split)
  experiment_flags.check_geometry_flags(info.geometry, config.data_dir)
  if FLAGS.cpu_devices < 1:
    raise UserError(f"--cpu_devices={FLAGS.cpu_devices} must be >= 1")
  # TensorFlow starts here: devices and strategy first.
  logging.set_verbosity(logging.WARNING)
  from ptychonet_tf.training import trainer  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  strategy_lib.split_cpu(FLAGS.cpu_devices)
  strategy = strategy_lib.make_strategy(FLAGS.distribution)
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(config.seed)  # the initialisation seed
  job = trainer.Trainer(config, strategy)
  if FLAGS.eval_only:
    job.evaluate()
    return
  # Refuses a model_dir of another dataset or network before anything is
  # written (the lock file and flags.txt included) ...
  job.prepare_run_dir(dry_run=True)
  # ... then, holding model_dir's lock (a second train there is refused),
  # checks again, moves an old run aside on --restart and trains.
  with run_dir.locked(config.model_dir) if job.is_chief else (
      contextlib.nullcontext()):
    job.prepare_run_dir()
    if job.is_chief:
      files.write_text(os.path.join(config.model_dir, run_dir.FLAGS_FILE),
                       FLAGS.flags_into_string())
    job.train()


def run():
  cli.run_command(main, __name__, (
      experiment_flags.SIMULATION, experiment_flags.TRAINING,
      experiment_flags.RUN_DIR))


if __name__ == "__main__":
  run()
