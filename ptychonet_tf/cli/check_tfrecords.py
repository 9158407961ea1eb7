r"""Checks a dataset directory: metadata, every shard's framing and record counts.

  python tools/check_tfrecords.py --data_dir=tfrecords/small_dense [--parse]

Prints one line per split. With --parse it also verifies every record's
data checksum and decodes every example (catches damaged payloads, not just
damaged framing). A problem ends in one line naming the shard and record, and
exit status 2; deleting the shard and re-running tools/make_tfrecords.py with
the dataset's flags rewrites it.
"""
from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "Dataset directory to check.")
flags.DEFINE_bool("parse", False, "Also verify every record's data checksum "
                  "and decode every example.")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  del argv
  cli.require_flags("data_dir")
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  info = pipeline.load_dataset_info(FLAGS.data_dir)
  g = info.geometry
  for split in sorted(info.shards):
    n = pipeline.verify_shards(info, split)
    if FLAGS.parse:
      damaged = pipeline.find_damaged_record(info, split, parse=True)
      if damaged:
        raise UserError(f"{damaged}; re-run tools/make_tfrecords.py with "
                        f"the dataset's flags to rewrite it")
    scans = (f"a family of geometries: each scan its own probe and "
             f"positions, patterns of {g.probe_shape[0]}x{g.probe_shape[1]}, "
             f"objects up to {g.object_shape[0]}x{g.object_shape[1]}"
             if info.family else
             f"{g.num_positions} patterns of {g.probe_shape[0]}x"
             f"{g.probe_shape[1]}, object {g.object_shape[0]}x"
             f"{g.object_shape[1]}")
    print(f"{split}: {n} scans in {len(info.shards[split])} shards; {scans}"
          + (", all parsed" if FLAGS.parse else ""))


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
