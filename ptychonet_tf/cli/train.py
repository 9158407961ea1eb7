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
export) starts a new run from another run's weights.
"""
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
flags.DEFINE_bool("restart", False,
                  "Start a fresh run in a model_dir that holds one; the old "
                  "run is moved to <model_dir>/previous-<time>/ (nothing is "
                  "deleted).")
flags.DEFINE_bool("fine_tune", False,
                  "model_dir holds a run on another dataset: start from its "
                  "latest weights (same pattern size) with a fresh optimizer "
                  "at step 0 and record the new dataset; the old run is moved "
                  "to <model_dir>/previous-<time>/. On its own dataset the "
                  "run resumes.")
flags.DEFINE_string("init_from", None,
                    "The --model_dir of an earlier run or a SavedModel "
                    "export (--export_dir or a version of it): start this "
                    "new run from its weights with a fresh optimizer at step "
                    "0 (the flags must build the same network), e.g. "
                    "--loss=physics on data without objects.")
FLAGS = flags.FLAGS


def train_config():
  """The TrainConfig of the parsed flags."""
  network = NetworkConfig(base_channels=FLAGS.base_channels, depth=FLAGS.depth,
                          max_channels=FLAGS.max_channels,
                          stitch_weighting=FLAGS.stitch_weighting,
                          amplitude_range=(FLAGS.amp_min, FLAGS.amp_max),
                          phase_range=(FLAGS.phase_min, FLAGS.phase_max),
                          refine_steps=FLAGS.refine_steps,
                          refine_filters=FLAGS.refine_filters,
                          refine_groups=FLAGS.refine_groups,
                          refine_inertia=FLAGS.refine_inertia,
                          refine_smoothing=FLAGS.refine_smoothing,
                          architecture=FLAGS.architecture,
                          input_norm=FLAGS.input_norm)
  return TrainConfig(
      data_dir=FLAGS.data_dir, model_dir=FLAGS.model_dir,
      export_dir=FLAGS.export_dir, network=network, epochs=FLAGS.epochs,
      refine_epochs=FLAGS.refine_epochs,
      refine_learning_rate=FLAGS.refine_learning_rate,
      refine_train_network=FLAGS.refine_train_network,
      refine_steps_per_epoch=FLAGS.refine_steps_per_epoch,
      refine_batch_size=FLAGS.refine_batch_size,
      batch_size=FLAGS.batch_size, shuffle_scans=FLAGS.shuffle_scans,
      steps_per_epoch=FLAGS.steps_per_epoch,
      learning_rate=FLAGS.learning_rate, lr_schedule=FLAGS.lr_schedule,
      beta1=FLAGS.beta1, loss=FLAGS.loss,
      dse_lambda=FLAGS.dse_lambda, physics_noise=FLAGS.physics_noise,
      mixed_precision=FLAGS.mixed_precision,
      seed=FLAGS.seed, eval_scans=FLAGS.eval_scans,
      num_images=FLAGS.num_images, keep_checkpoints=FLAGS.keep_checkpoints,
      checkpoint_secs=FLAGS.checkpoint_secs, export=FLAGS.export,
      restart=FLAGS.restart, fine_tune=FLAGS.fine_tune,
      init_from=FLAGS.init_from)


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
  # written (flags.txt included); moves an old run aside on --restart.
  job.prepare_run_dir()
  if job.is_chief:
    os.makedirs(config.model_dir, exist_ok=True)
    files.write_text(os.path.join(config.model_dir, run_dir.FLAGS_FILE),
                     FLAGS.flags_into_string())
  job.train()


def run():
  cli.run_command(main, __name__, (
      experiment_flags.SIMULATION, experiment_flags.TRAINING,
      experiment_flags.RUN_DIR))


if __name__ == "__main__":
  run()
