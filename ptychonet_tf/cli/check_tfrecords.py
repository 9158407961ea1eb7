r"""Checks a dataset directory: metadata, every shard's framing and record counts.

  python tools/check_tfrecords.py --data_dir=tfrecords/small_dense [--parse]

Prints one line per split. With --parse it also decodes every example
(catches damaged payloads, not just damaged framing). A problem ends in one
line naming the shard, and exit status 2; re-running tools/make_tfrecords.py
with the dataset's flags rewrites damaged shards.
"""
from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import schema
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "Dataset directory to check.")
flags.DEFINE_bool("parse", False, "Also decode every example.")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  del argv
  if not FLAGS.data_dir:
    raise UserError("--data_dir is required")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = pipeline.load_dataset_info(FLAGS.data_dir)
  g = info.geometry
  for split in sorted(info.shards):
    n = pipeline.verify_shards(info, split)
    if FLAGS.parse:
      parse = schema.make_parser(g.num_positions, g.probe_shape,
                                 g.object_shape, info.amplitude_dtype)
      compression = "GZIP" if info.compression == "gzip" else ""
      for path in info.shard_paths(split):
        record = 0
        try:
          for serialized in tf.data.TFRecordDataset(path, compression):
            parse(serialized)
            record += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
          raise UserError(f"TFRecord shard {path} is corrupt: record {record} "
                          f"fails its checksum or does not parse; delete it and re-run "
                          f"tools/make_tfrecords.py with the dataset's flags")
    print(f"{split}: {n} scans in {len(info.shards[split])} shards; "
          f"{g.num_positions} patterns of {g.probe_shape[0]}x{g.probe_shape[1]}, "
          f"object {g.object_shape[0]}x{g.object_shape[1]}"
          + (", all parsed" if FLAGS.parse else ""))


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
