r"""Precomputes simulated scans into sharded TFRecords.

  python tools/make_tfrecords.py --flagfile=configs/small_dense.flags \
      --out_dir=tfrecords/small_dense [--num_train=400 --num_test=20 \
      --images=default --seed=0 --num_shards=8 --workers=2]

Writes {train,test}-NNNNN-of-NNNNN.tfrecord, geometry.npz and dataset.json
(see ptychonet_tf/data/writer.py). `--runner=beam` writes the same shards with
an Apache Beam pipeline (DirectRunner with --workers processes by default;
`--beam_options=...` for Flink or Spark: docs/datasets.md). Deterministic for
a seed; killed part-way and re-run with the same flags, it keeps finished
shards and writes the rest.

Measured scans (any file `reconstruct` reads: scan .npz, tike, CXI) go into
the same layout without objects, for `train --loss=physics`
(ptychonet_tf/data/measured.py); the probe in geometry.npz comes from
--probe_iterations DM iterations with probe refinement on the first scan:

  python tools/make_tfrecords.py --scans=scan1.npz,scan2.npz \
      --out_dir=tfrecords/measured [--probe_iterations=100 --num_test=1]
"""
import functools
import os

from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.utils import locks
from ptychonet_tf.utils.errors import UserError, report_user_errors

experiment_flags.define_experiment_flags()
flags.DEFINE_string("out_dir", None, "Dataset directory to write; default "
                    "--data_dir (which configs/<name>.flags set to "
                    "tfrecords/<name>).")
flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
flags.DEFINE_enum("runner", "local", ["local", "beam"],
                  "Who writes the shards: a process pool on this machine, or "
                  "an Apache Beam pipeline (the `beam` extra; "
                  "ptychonet_tf/data/beam_writer.py); the same bytes.")
flags.DEFINE_string("beam_options", None,
                    "--runner=beam: Beam's pipeline options as one string, "
                    "e.g. \"--runner=DirectRunner --direct_num_workers=2 "
                    "--direct_running_mode=multi_processing\" (the default, "
                    "with --workers processes) or a Flink or Spark "
                    "runner's options (docs/datasets.md).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_list("scans", [], "Measured scan files (as `reconstruct "
                  "--scan` reads them) to write as a dataset without objects "
                  "instead of simulating; one geometry. --num_test, when "
                  "given, takes the last scans as the test split (default: "
                  "the test split repeats the training scans).")
flags.DEFINE_integer("probe_iterations", 100,
                     "--scans: DM iterations with probe refinement on the "
                     "first scan that give the dataset's probe; 0 keeps the "
                     "file's probe.")
FLAGS = flags.FLAGS


def measured_job():
  """--scans: reads and checks the scans; returns job(out_dir), which
  refines the probe and writes the dataset."""
  # pylint: disable=g-import-not-at-top
  from ptychonet_tf import reconstructors
  from ptychonet_tf.baselines import dm
  from ptychonet_tf.data import measured
  from ptychonet_tf.data import readers
  # pylint: enable=g-import-not-at-top
  if FLAGS.probe_iterations < 0:
    raise UserError(f"--probe_iterations={FLAGS.probe_iterations} must be "
                    f">= 0")
  scans = [readers.read_scan(path) for path in FLAGS.scans]  # validated
  measured.check_same_geometry(scans, FLAGS.scans)

  def probe():
    if not FLAGS.probe_iterations:
      return scans[0].probe
    print(f"refining the probe: {FLAGS.probe_iterations} DM iterations on "
          f"{FLAGS.scans[0]}")
    scan = scans[0]
    return reconstructors.reconstruct(
        "dm", scan.amplitudes, scan.probe, scan.layout, scan.object_shape,
        dm.DMConfig(iterations=FLAGS.probe_iterations, refine_probe=True,
                    probe_start=min(10, FLAGS.probe_iterations // 2),
                    progress=FLAGS.progress)).probe
  config = measured.MeasuredConfig(
      files=tuple(FLAGS.scans),
      sha256=tuple(measured.file_sha256(p) for p in FLAGS.scans),
      probe_iterations=FLAGS.probe_iterations,
      num_test=FLAGS.num_test if FLAGS["num_test"].present else 0,
      amplitude_dtype=FLAGS.amplitude_dtype)

  def job(out_dir):
    stats = measured.write_measured_dataset(
        scans, probe, out_dir, config, flags_string=FLAGS.flags_into_string())
    print(f"{out_dir}: {stats['train']} train + {stats['test']} test measured "
          f"scans, no objects (train with --loss=physics)"
          + ("; already complete, kept" if stats["kept"] else ""))
  return job


def simulated_job():
  """Checks the simulation flags; returns job(out_dir), which writes the
  dataset."""
  for name in ("num_train", "num_test", "num_shards"):
    if getattr(FLAGS, name) < (1 if name == "num_shards" else 0):
      raise UserError(f"--{name}={getattr(FLAGS, name)} must be "
                      f"{'>= 1' if name == 'num_shards' else '>= 0'}")
  if FLAGS.workers is not None and FLAGS.workers < 1:
    raise UserError(f"--workers={FLAGS.workers} must be >= 1")
  if FLAGS.beam_options is not None and FLAGS.runner != "beam":
    raise UserError("--beam_options needs --runner=beam")
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  config = writer.WriteConfig(
      simulation=experiment_flags.simulation_config(), images=FLAGS.images,
      num_train=FLAGS.num_train, num_test=FLAGS.num_test, seed=FLAGS.seed,
      num_shards=FLAGS.num_shards, amplitude_dtype=FLAGS.amplitude_dtype,
      compression=FLAGS.compression)
  writer.check_simulation(config.simulation)
  write = functools.partial(writer.write_dataset, workers=FLAGS.workers)
  if FLAGS.runner == "beam":
    from ptychonet_tf.data import beam_writer  # pylint: disable=g-import-not-at-top
    write = functools.partial(beam_writer.write_dataset,
                              options=beam_writer.pipeline_options(
                                  FLAGS.beam_options or
                                  beam_writer.default_options(FLAGS.workers)))

  def job(out_dir):
    stats = write(config, out_dir, flags_string=FLAGS.flags_into_string(),
                  progress=FLAGS.progress)
    print(f"{out_dir}: {config.num_train} train + {config.num_test} test "
          f"scans; {stats['written']} shards written, {stats['kept']} kept "
          f"from an earlier run, {stats['seconds']:.1f} s"
          + ("; TFDS metadata written (tfds.builder_from_directory reads it)"
             if stats.get("tfds_metadata") else ""))
  return job


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  out_dir = FLAGS.out_dir or FLAGS.data_dir
  if not out_dir:
    raise UserError("--out_dir is required (or a --data_dir, e.g. from the "
                    "experiment's flagfile)")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"output folder {out_dir} is a file; expected a directory")
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  writer.check_not_a_run(out_dir)
  # Everything is checked before the folder is touched.
  job = measured_job() if FLAGS.scans else simulated_job()
  # One writer per dataset folder: a second make_tfrecords on it is refused
  # in one line naming this one's PID while this one runs.
  with locks.hold(out_dir, "make_tfrecords"):
    job(out_dir)


def run():
  cli.run_command(main, __name__, (experiment_flags.SIMULATION,))


if __name__ == "__main__":
  run()
