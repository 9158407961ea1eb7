r"""Precomputes simulated scans into sharded TFRecords.

  python tools/make_tfrecords.py --flagfile=configs/small_dense.flags \
      --out_dir=tfrecords/small_dense [--num_train=400 --num_test=20 \
      --images=default --seed=0 --num_shards=8 --workers=2]

Writes {train,test}-NNNNN-of-NNNNN.tfrecord, geometry.npz and dataset.json
(see ptychonet_tf/data/writer.py). Deterministic for a seed; killed part-way
and re-run with the same flags, it keeps finished shards and writes the rest.
"""
from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.utils.errors import UserError, report_user_errors

experiment_flags.define_experiment_flags()
flags.DEFINE_string("out_dir", None, "Dataset directory to write; default "
                    "--data_dir (which configs/<name>.flags set to "
                    "tfrecords/<name>).")
flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  out_dir = FLAGS.out_dir or FLAGS.data_dir
  if not out_dir:
    raise UserError("--out_dir is required (or a --data_dir, e.g. from the "
                    "experiment's flagfile)")
  for name in ("num_train", "num_test", "num_shards"):
    if getattr(FLAGS, name) < (1 if name == "num_shards" else 0):
      raise UserError(f"--{name}={getattr(FLAGS, name)} must be "
                      f"{'>= 1' if name == 'num_shards' else '>= 0'}")
  if FLAGS.workers is not None and FLAGS.workers < 1:
    raise UserError(f"--workers={FLAGS.workers} must be >= 1")
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  config = writer.WriteConfig(
      simulation=experiment_flags.simulation_config(), images=FLAGS.images,
      num_train=FLAGS.num_train, num_test=FLAGS.num_test, seed=FLAGS.seed,
      num_shards=FLAGS.num_shards, amplitude_dtype=FLAGS.amplitude_dtype,
      compression=FLAGS.compression)
  stats = writer.write_dataset(config, out_dir, workers=FLAGS.workers,
                               flags_string=FLAGS.flags_into_string(),
                               progress=FLAGS.progress)
  print(f"{out_dir}: {config.num_train} train + {config.num_test} test "
        f"scans; {stats['written']} shards written, {stats['kept']} kept from "
        f"an earlier run, {stats['seconds']:.1f} s"
        + ("; TFDS metadata written (tfds.builder_from_directory reads it)"
           if stats.get("tfds_metadata") else ""))


def run():
  cli.run_command(main, __name__, (experiment_flags.SIMULATION,))


if __name__ == "__main__":
  run()
