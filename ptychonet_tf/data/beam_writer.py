"""The dataset writer's shards written by an Apache Beam pipeline.

`write_dataset` is `writer.write_dataset` whose shards a Beam pipeline
writes: it plans the shards as for the local writer (the same shard ranges,
geometry.npz, dataset.json and, at the end, the tfds metadata) and hands the shards still to write to `run`: one Beam element
per shard range, simulated and written by a DoFn that calls the local
writer's own `write_shard` (temp name, then rename), so the shards are
byte-identical to the local writer's and a killed pipeline resumes when
re-run (finished shards are kept, the rest are planned again).

Pipeline options pass through unchanged (`--beam_options`, parsed by Beam's
PipelineOptions); by default the DirectRunner on this machine, in separate
processes, its workers silent (a failure ends in one line naming the worker's error):

  --runner=DirectRunner --direct_num_workers=N --direct_running_mode=multi_processing
  --default_sdk_harness_log_level=CRITICAL

The same pipeline runs on Flink, Spark or Dataflow with their options, e.g.
`--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK`
(docs/datasets.md); the output folder must then be a POSIX path that every
worker can write (a shared file system: shards are renamed into place).
"""
import functools
import logging
import os
import shlex
import threading

from ptychonet_tf.data import writer
from ptychonet_tf.utils.errors import UserError

# Beam logs its optional cloud clients at import (on the root logger) and
# every stage of a run at INFO or WARNING; the progress bar and errors are
# what a user needs.
logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
_root_level = logging.getLogger().level
logging.getLogger().setLevel(logging.ERROR)
try:
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options import pipeline_options as options_lib  # pylint: disable=g-import-not-at-top
except ImportError:  # the optional `beam` extra
  beam = None
finally:
  logging.getLogger().setLevel(_root_level)


# A worker's refusal for shard X is left in X + ERROR_SUFFIX for `run`.
ERROR_SUFFIX = ".error"


def default_options(workers=None):
  """Beam's options for the DirectRunner with `workers` processes (default:
  all cores, as the local writer)."""
  workers = workers or os.cpu_count() or 1
  quiet = "--default_sdk_harness_log_level=CRITICAL"
  if workers <= 1:
    return f"--runner=DirectRunner --direct_running_mode=in_memory {quiet}"
  return (f"--runner=DirectRunner --direct_num_workers={workers} "
          f"--direct_running_mode=multi_processing {quiet}")


def _check_installed():
  if beam is None:
    raise UserError("--runner=beam needs Apache Beam: pip install "
                    "'ptychonet_tf[beam]' (or apache-beam)")


def pipeline_options(text):
  """PipelineOptions from a command-line string; UserError if Beam rejects it."""
  _check_installed()
  try:
    args = shlex.split(text)
  except ValueError as e:
    raise UserError(f"--beam_options={text!r}: {e}") from None
  unknown = [a for a in args if not a.startswith("--")]
  if unknown:
    raise UserError(f"--beam_options={text!r}: {unknown[0]!r} is not an "
                    f"option (expected --name=value)")
  options = options_lib.PipelineOptions(args)
  # An option Beam does not know is kept, unparsed, and would be dropped
  # silently: name it instead.
  known = options.get_all_options(drop_default=False, retain_unknown_options=False)
  for arg in args:
    name = arg[2:].split("=", 1)[0].replace("-", "_")
    if name not in known:
      raise UserError(f"--beam_options: Beam knows no option --{name}")
  return options


def _shard_writer(config, geometry, pools, out_dir):
  """The DoFn: one shard per element."""
  parent = os.getpid()

  class WriteShard(beam.DoFn):
    """Simulates and writes one shard range; yields the shard's path."""

    def setup(self):
      # One TensorFlow thread per worker process, as the local writer's
      # pool; in the launching process (in_memory) its own settings stay.
      threads = 1 if os.getpid() != parent else 0
      writer.init_worker(config, geometry, pools, out_dir, None, threads)

    def process(self, task):
      try:
        yield writer.write_shard(task)
      except UserError as e:
        # Not raised: Beam would print the worker's traceback. The
        # launching process names it (`run`).
        path = os.path.join(out_dir, writer.shard_name(task.split, task.index,
                                                       task.count))
        with open(path + ERROR_SUFFIX, "w") as f:
          f.write(str(e))

  return WriteShard()


def worker_error(error):
  """The last `SomeError: message` line of a Beam error's text (the
  worker's own error, with the package's UserError shown as its message)."""
  found = None
  for line in str(error).splitlines():
    head, sep, message = line.strip().partition(": ")
    if sep and head.split(".")[-1].endswith(("Error", "Exception")):
      found = message if head.endswith("UserError") else line.strip()
  return found or str(error).strip().splitlines()[0]


def _stamp(path):
  try:
    return os.stat(path).st_mtime_ns
  except OSError:
    return None


def _watch(sizes, before, bar, stop):
  """Advances `bar` by sizes[path] when a shard appears or is replaced."""
  pending = set(sizes)
  while pending:
    for path in list(pending):
      now = _stamp(path)
      if now is not None and now != before[path]:
        bar.update(sizes[path])
        pending.discard(path)
    if stop.wait(0.5):
      break


def write_dataset(config, out_dir, options, flags_string="", progress=True):
  """writer.write_dataset with the shards written by a Beam pipeline.

  Args:
    config: writer.WriteConfig.
    out_dir: dataset directory (created if needed).
    options: PipelineOptions (`pipeline_options`).
    flags_string, progress: as writer.write_dataset.

  Returns:
    writer.write_dataset's statistics.
  """
  _check_installed()
  return writer.write_dataset(config, out_dir, flags_string=flags_string,
                              progress=progress,
                              execute=functools.partial(run, options=options))


def run(tasks, config, geometry, pools, out_dir, bar, options):
  """Writes the shards of `tasks` (writer.ShardTask) with a Beam pipeline.

  Args:
    tasks: the shard ranges still to write.
    config, geometry, pools: as the local writer's workers get them.
    out_dir: the dataset folder.
    options: PipelineOptions (`pipeline_options`).
    bar: a tqdm bar advanced by scans as shards land.
  """
  paths = [os.path.join(out_dir, writer.shard_name(t.split, t.index, t.count))
           for t in tasks]
  sizes = {p: t.stop - t.start for p, t in zip(paths, tasks)}
  for path in paths:  # a refusal left by an earlier run
    if os.path.exists(path + ERROR_SUFFIX):
      os.remove(path + ERROR_SUFFIX)
  before = {p: _stamp(p) for p in paths}
  stop = threading.Event()
  watcher = threading.Thread(target=_watch, args=(sizes, before, bar, stop),
                             daemon=True)
  watcher.start()
  try:
    with beam.Pipeline(options=options) as pipeline:
      _ = (pipeline
           | "ShardRanges" >> beam.Create(tasks, reshuffle=False)
           | "Reshuffle" >> beam.Reshuffle()
           | "SimulateAndWrite" >> beam.ParDo(
               _shard_writer(config, geometry, pools, out_dir)))
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Beam re-raises a worker's error inside its own, with the worker's
    # traceback as text: name the worker's error in one line.
    raise UserError(f"the Beam pipeline failed: {worker_error(e)}; finished "
                    f"shards are kept: run the same command again to "
                    f"resume") from None
  finally:
    stop.set()
    watcher.join()
  refusals = []
  for path in paths:
    if os.path.exists(path + ERROR_SUFFIX):
      with open(path + ERROR_SUFFIX) as f:
        refusals.append(f.read().strip())
      os.remove(path + ERROR_SUFFIX)
  if refusals:
    raise UserError(f"{refusals[0]}; finished shards are kept: run the same "
                    f"command again to resume")
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise UserError(f"the Beam pipeline ended without writing {missing[0]}; "
                    f"run the same command again to write what is missing")
