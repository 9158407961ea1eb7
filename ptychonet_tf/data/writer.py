"""Writes simulated scans into sharded TFRecords, in parallel and resumably.

Layout of a dataset directory:

  train-00000-of-00008.tfrecord ...   one tf.train.Example per scan (schema.py)
  test-00000-of-00002.tfrecord ...
  geometry.npz                        probe, layout, object_shape
  dataset.json                        counts, shapes, dtype, compression, flags
  dataset_info.json, features.json,   TensorFlow Datasets metadata, so that
  metadata.json                       tfds.builder_from_directory reads the
                                      shards (tfds_info.py; not for gzip)

Scan i of a split is simulated from a generator seeded by (seed, split, i)
(`simulator.scan_rng`), so the bytes of every shard depend only on the
settings, not on the number of workers or on interruptions. A shard is written
to a temp name (`utils.files`) and renamed when complete; a re-run keeps shards whose framing
checks out and rewrites the rest, so a killed job resumes where it stopped.
The shards are written by a process pool here or by an Apache Beam pipeline
(beam_writer.py) from the same plan and the same shard function.
The tfds metadata are removed while shards are being (re)written and written
again, from the shard lengths, once every shard is complete.
"""
from concurrent import futures
import dataclasses
import json
import multiprocessing
import os
import queue as queue_lib
import time

import numpy as np

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.data import records
from ptychonet_tf.data import schema
from ptychonet_tf.data import tfds_info
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import family as family_lib
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import objects
from ptychonet_tf.physics import simulator

GEOMETRY_FILE = "geometry.npz"
INFO_FILE = "dataset.json"


def shard_name(split, index, count):
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_ranges(num_examples, num_shards):
  """[(start, stop)] splitting num_examples into min(num_shards, n) near-equal shards."""
  if num_examples == 0:
    return []
  n = max(1, min(num_shards, num_examples))
  bounds = np.linspace(0, num_examples, n + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclasses.dataclass(frozen=True)
class WriteConfig:
  """Everything that determines a dataset's bytes."""
  simulation: simulator.SimulationConfig
  images: str = "default"
  num_train: int = 200
  num_test: int = 20
  seed: int = 0
  num_shards: int = 4
  amplitude_dtype: str = "float32"
  compression: str = "none"

  def identity(self):
    """A JSON-able dict; a dataset directory is only resumed with equal identity."""
    return json.loads(json.dumps(dataclasses.asdict(self), default=str))


@dataclasses.dataclass(frozen=True)
class ShardTask:
  split: str
  index: int
  count: int
  start: int
  stop: int


# Per-process state of pool workers (set by init_worker).
_WORKER = {}


def init_worker(config, geometry, pools, out_dir, ticks, threads):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    pass  # already initialised in this process (in-process mode)
  _WORKER.update(config=config, geometry=geometry, pools=pools, out_dir=out_dir,
                 ticks=ticks, load=images_lib.ImageCache(),
                 simulator=simulator.Simulator(geometry,
                                                config.simulation.photons))


def write_shard(task):
  """Simulates and writes one shard (temp name, then rename). Returns its path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  w = _WORKER
  config, geometry = w["config"], w["geometry"]
  pool = w["pools"][task.split]
  path = os.path.join(w["out_dir"], shard_name(task.split, task.index, task.count))
  options = tf.io.TFRecordOptions(
      compression_type="GZIP" if config.compression == "gzip" else "")

  family = family_config(config, geometry)

  def write(tmp):
    with tf.io.TFRecordWriter(tmp, options) as writer:
      for i in range(task.start, task.stop):
        rng = simulator.scan_rng(config.seed, task.split, i)
        scan = (None if family is None else
                family_lib.draw_scan(rng, geometry.probe_shape, family))
        shape = geometry.object_shape if scan is None else scan.object_shape
        obj = simulator.random_object(pool, shape, config.simulation.object,
                                      rng, w["load"])
        noise_seed = int(rng.integers(2**31))
        if scan is None:
          amps = w["simulator"].amplitudes(obj[None], seed=noise_seed)[0]
          extra = {}
        else:
          amps = w["simulator"].scan_amplitudes(obj, scan.probe, scan.layout,
                                                seed=noise_seed)
          extra = {"positions": scan.positions, "probe": scan.probe}
        amp, phase = objects.split_object(obj)
        writer.write(schema.encode(
            amps, amp, phase, i, num_positions=len(amps),
            probe_shape=geometry.probe_shape, object_shape=shape,
            amplitude_dtype=config.amplitude_dtype, **extra))
        if w["ticks"] is not None:
          w["ticks"].put(1)

  files.atomic_write(path, write)
  return path


def family_config(config, geometry):
  """The family a WriteConfig draws its scans from (None: every scan in
  `geometry`), its largest object the nominal geometry's."""
  family = config.simulation.family
  if family is None:
    return None
  return dataclasses.replace(family, max_object=geometry.object_shape).validate(
      geometry.probe_shape)


def _settled(identity):
  """An identity without its None-valued settings: a setting added later
  (e.g. the scan's `file`) is None in the identities of datasets written
  before it existed, and they stay the same datasets."""
  if isinstance(identity, dict):
    return {k: _settled(v) for k, v in identity.items() if v is not None}
  return identity


# Ranges of the simulation settings (flags in brackets), checked before a
# probe, a layout or an object is allocated.
MAX_PROBE_SIDE = 4096        # --probe_size
MAX_POSITIONS = 100_000      # --scan_count, --mesh_rows x --mesh_cols
MAX_RINGS = 1000             # --circle_rings
MAX_MARGIN = 10_000          # --scan_margin (pixels)
MAX_SHARDS = 10_000          # --num_shards
# Pattern-sized arrays the simulator holds for one scan (amplitudes, complex
# exit waves and their far fields).
SCAN_COPIES = 6


def check_simulation(config):
  """Raises UserError naming the flag of a simulation setting out of range
  (`SimulationConfig`), before anything of its size is allocated."""
  geometry = config.geometry
  size = tuple(geometry.probe.size)
  if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and
                               1 <= s <= MAX_PROBE_SIDE for s in size):
    raise UserError(f"--probe_size={','.join(str(s) for s in size)} must be "
                    f"two sizes in [1, {MAX_PROBE_SIDE}] pixels")
  scan = geometry.scan
  if scan.pattern == "fermat":
    count = limits.check_count(scan.count, "--scan_count", 1, MAX_POSITIONS)
  elif scan.pattern == "mesh":
    limits.check_count(scan.rows, "--mesh_rows", 1, MAX_POSITIONS)
    limits.check_count(scan.cols, "--mesh_cols", 1, MAX_POSITIONS)
    limits.check_count(scan.every, "--mesh_every", 1, MAX_POSITIONS)
    count = limits.check_count(scan.rows * scan.cols,
                               "--mesh_rows x --mesh_cols", 1, MAX_POSITIONS)
  elif scan.pattern == "circles":
    rings = limits.check_count(scan.rings, "--circle_rings", 1, MAX_RINGS)
    count = 1 + 3 * rings * (rings + 1)  # an upper bound of the positions
  else:
    count = 1
  if scan.pattern != "file" and not (np.isfinite(scan.step) and
                                     0 < scan.step <= MAX_PROBE_SIDE):
    raise UserError(f"--scan_step={scan.step} must be in (0, "
                    f"{MAX_PROBE_SIDE}] pixels")
  # A negative margin is the layout's own check ("falls outside").
  limits.check_count(scan.margin, "--scan_margin", -MAX_MARGIN, MAX_MARGIN)
  limits.check_photons([config.photons])
  limits.check_allocation((count, *size), np.complex64,
                          f"a scan of {count} positions of {size[0]}x{size[1]}"
                          f" pixels (--scan_count, --probe_size)",
                          copies=SCAN_COPIES)


def check_geometry(geometry):
  """Raises UserError when a built geometry's object is too large (a wide
  --scan_step or --scan_margin)."""
  limits.check_object_shape(geometry.object_shape,
                            "the scan's object (--scan_step, --scan_margin, "
                            "--probe_size)")


# Files that make a folder a training run's (training/run_dir.py): a dataset
# written there would replace the run's geometry.npz.
RUN_MARKERS = ("run.json", "model.json", "checkpoint")


def check_not_a_run(out_dir):
  """Raises UserError when out_dir holds a training run (run.json,
  model.json or checkpoints) rather than a dataset."""
  if not os.path.isdir(out_dir):
    return
  names = os.listdir(out_dir)
  found = [n for n in RUN_MARKERS if n in names] or [
      n for n in names if n.startswith("ckpt-")][:1]
  if found:
    raise UserError(f"output folder {out_dir} holds a training run "
                    f"({found[0]}), not a dataset; writing a dataset there "
                    f"would replace the run's {GEOMETRY_FILE}; use another "
                    f"--out_dir")


def check_out_dir(out_dir, config):
  """Creates out_dir; raises UserError if it is a file or holds a dataset of
  another identity (`config.identity()`)."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"output folder {out_dir} is a file; expected a directory")
  check_not_a_run(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise files.write_error(e, out_dir) from None
  info_path = os.path.join(out_dir, INFO_FILE)
  if os.path.exists(info_path):
    try:
      with open(info_path) as f:
        old = json.load(f).get("identity")
    except (OSError, ValueError):
      old = None
    new = config.identity()
    if old is not None and _settled(old) != _settled(new):
      differ = sorted(k for k in new
                      if _settled(old.get(k)) != _settled(new[k]))
      raise UserError(f"{out_dir} holds a dataset made with other settings "
                      f"({', '.join(differ)} differ); use a new output folder or "
                      f"delete it")


def write_info(out_dir, geometry, shards, counts, identity, *, complete,
               amplitude_dtype, compression, flags_string, **extra):
  """Writes dataset.json (atomically): what `pipeline.load_dataset_info`
  reads. `extra`: fields of this kind of dataset (the simulated one's images
  and seed, a measured one's "objects": false)."""
  info = {
      "schema_version": schema.SCHEMA_VERSION,
      "complete": complete,
      "counts": dict(counts),
      "shards": shards,
      "num_positions": geometry.num_positions,
      "probe_shape": list(geometry.probe_shape),
      "object_shape": list(geometry.object_shape),
      "amplitude_dtype": amplitude_dtype,
      "compression": compression,
      **extra,
      "identity": identity,
      "flags": flags_string,
  }
  files.write_json(os.path.join(out_dir, INFO_FILE), info)


def _write_info(out_dir, config, geometry, shards, complete, flags_string):
  family = family_config(config, geometry)
  extra = {} if family is None else {
      "family": json.loads(json.dumps(dataclasses.asdict(family)))}
  write_info(out_dir, geometry, shards,
             {"train": config.num_train, "test": config.num_test},
             config.identity(), complete=complete,
             amplitude_dtype=config.amplitude_dtype,
             compression=config.compression, flags_string=flags_string,
             images=config.images, seed=config.seed, **extra)


def run_pool(tasks, workers, setup, bar, function=None, initializer=None):
  """`write_shard` of every task in `workers` fresh processes.

  A process pool of concurrent.futures, not multiprocessing.Pool: when a
  worker dies (killed by the system, e.g. out of memory) multiprocessing's
  pool starts another and waits forever for the lost shard, while this one
  fails at once, in one line (the shards already written are kept: the same
  command resumes).

  Args:
    tasks: ShardTasks.
    workers: processes (>= 2).
    setup: (config, geometry, pools, out_dir), `init_worker`'s arguments.
    bar: tqdm bar, advanced per scan written.
    function, initializer: instead of `write_shard` and `init_worker`
      (tests), module-level functions of the same arguments.
  """
  function = function or write_shard
  ctx = multiprocessing.get_context("spawn")
  with ctx.Manager() as manager:
    ticks = manager.Queue()
    with futures.ProcessPoolExecutor(workers, ctx,
                                     initializer or init_worker,
                                     (*setup, ticks, 1)) as pool:
      pending = {pool.submit(function, task) for task in tasks}
      try:
        while pending:
          done, pending = futures.wait(pending, timeout=0.2)
          for future in done:
            future.result()  # re-raises a worker's error here
          while not ticks.empty():
            bar.update(ticks.get())
      except futures.BrokenExecutor:
        raise UserError(
            "a simulation worker process died (killed by the system, e.g. "
            "out of memory?); the shards written so far are kept: run the "
            "same command again to resume") from None
      finally:
        for future in pending:
          future.cancel()


def write_dataset(config, out_dir, workers=None, flags_string="", progress=True,
                  execute=None):
  """Simulates the train and test splits of `config` into `out_dir`.

  Args:
    config: WriteConfig.
    out_dir: dataset directory (created if needed).
    workers: parallel processes (default: all cores). 1 runs in-process.
    flags_string: the resolved flags, stored in dataset.json.
    progress: show a tqdm progress bar.
    execute: what writes the planned shards, execute(tasks, config,
      geometry, pools, out_dir, bar) with `write_shard` per task; default
      a process pool of `workers` on this machine (beam_writer.py passes an
      Apache Beam pipeline).

  Returns:
    dict with "written" and "kept" shard counts, "tfds_metadata" (whether
    the TensorFlow Datasets metadata were written: not for gzip shards or
    without tensorflow-datasets) and "seconds".
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  start_time = time.time()
  check_simulation(config.simulation)
  limits.check_count(config.num_shards, "--num_shards", 1, MAX_SHARDS)
  check_out_dir(out_dir, config)
  geometry = geometry_lib.make_geometry(config.simulation.geometry)
  check_geometry(geometry)
  family_config(config, geometry)  # a bad family fails here, in one line
  train_pool, test_pool = images_lib.open_image_pools(config.images)
  # Read one image of each pool up front, so a bad source fails in one line
  # here rather than inside a worker.
  images_lib.load_image(train_pool[0])
  images_lib.load_image(test_pool[0])
  geometry.save(os.path.join(out_dir, GEOMETRY_FILE))

  tasks, shards, lengths, kept = [], {}, {}, 0
  for split, count in (("train", config.num_train), ("test", config.num_test)):
    ranges = shard_ranges(count, config.num_shards)
    shards[split] = [shard_name(split, i, len(ranges)) for i in range(len(ranges))]
    lengths[split] = [b - a for a, b in ranges]
    for i, (a, b) in enumerate(ranges):
      path = os.path.join(out_dir, shards[split][i])
      if os.path.exists(path):
        try:
          if records.count_records(path, config.compression,
                                   verify_data=True) == b - a:
            kept += 1
            continue
        except records.CorruptShard:
          pass  # rewritten below
      tasks.append(ShardTask(split, i, len(ranges), a, b))
  if tasks:  # tfds must not read the folder while shards are missing
    tfds_info.remove_metadata(out_dir)
  _write_info(out_dir, config, geometry, shards, False, flags_string)

  todo = sum(t.stop - t.start for t in tasks)
  workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
  pools = {"train": train_pool, "test": test_pool}
  bar = tqdm(total=todo, unit="scan", desc=f"simulating into {out_dir}",
             disable=not progress or todo == 0)
  if execute is not None:
    if tasks:
      execute(tasks, config, geometry, pools, out_dir, bar)
  elif workers == 1:
    ticks = queue_lib.SimpleQueue()
    init_worker(config, geometry, pools, out_dir, ticks, 0)
    for task in tasks:
      write_shard(task)
      while not ticks.empty():
        bar.update(ticks.get())
  elif tasks:
    run_pool(tasks, workers, (config, geometry, pools, out_dir), bar)
  bar.close()
  _WORKER.clear()
  _write_info(out_dir, config, geometry, shards, True, flags_string)
  # tfds features have fixed shapes: a family's scans differ in size.
  tfds_files = None if config.simulation.family else tfds_info.write_metadata(
      out_dir, num_positions=geometry.num_positions,
      probe_shape=geometry.probe_shape, object_shape=geometry.object_shape,
      amplitude_dtype=config.amplitude_dtype, shard_lengths=lengths,
      shard_names=shards, compression=config.compression)
  return {"written": len(tasks), "kept": kept,
          "tfds_metadata": tfds_files is not None,
          "seconds": time.time() - start_time}
