"""The tf.data input pipeline over a dataset directory written by tools/make_tfrecords.py.

Order (STYLE.md): seeded shuffle of the shard list -> shard by input context
-> interleave -> parallel parse with shape checks -> (shuffle) -> batch ->
prefetch. With a `tf.distribute.InputContext` (from
`strategy.distribute_datasets_from_function`) each input pipeline reads its
own subset of shards and `batch_size` is the per-replica batch size.

`make_pattern_dataset` is the training input: the same scans, cut into
single (diffraction pattern, true object patch) examples and shuffled across
scans before batching, so that a batch mixes many objects. PtychoNet's
network and losses work pattern by pattern; batches of whole scans (every
pattern of one or two objects) leave BatchNorm and the gradient with little
variety, and on configs/small_dense.flags the network then learns little
more than the mean object (docs/training.md).

tf.data reports a damaged record without naming its file
(`DataLossError: corrupted record at 12`); readers wrap their loops in
`naming_damaged_records`, which traces such an error to its shard and record
and re-raises it as a one-line UserError.
"""
import contextlib
import dataclasses
import json
import os
from typing import Dict, List, Optional

import tensorflow as tf

from ptychonet_tf.data import records
from ptychonet_tf.data import schema
from ptychonet_tf.data import writer
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.physics.geometry import Geometry


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What dataset.json and geometry.npz say about a dataset directory."""
  data_dir: str
  geometry: Geometry
  counts: Dict[str, int]
  shards: Dict[str, List[str]]
  amplitude_dtype: str
  compression: str
  flags: str
  identity: Optional[dict] = None  # the writer's settings (WriteConfig.identity)
  objects: bool = True  # False: measured scans, records without objects
  # A family dataset's ranges (dataset.json "family", physics.family): each
  # scan has its own probe and positions; None: every scan in `geometry`.
  family: Optional[dict] = None

  def shard_paths(self, split):
    return [os.path.join(self.data_dir, s) for s in self.shards[split]]


def load_dataset_info(data_dir):
  """Reads a dataset directory's metadata; raises UserError if it is not one."""
  if not data_dir or not os.path.isdir(data_dir):
    raise UserError(f"data_dir {data_dir} does not exist; create it with "
                    f"tools/make_tfrecords.py --out_dir={data_dir}")
  info_path = os.path.join(data_dir, writer.INFO_FILE)
  if not os.path.isfile(info_path):
    raise UserError(f"data_dir {data_dir} holds no {writer.INFO_FILE}, so no "
                    f"dataset; create it with tools/make_tfrecords.py")
  try:
    with open(info_path) as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{info_path} is not valid JSON ({e})")
  if not isinstance(info, dict):
    raise UserError(f"{info_path} holds no JSON object; expected the "
                    f"dataset.json of tools/make_tfrecords.py")
  if not info.get("complete", False):
    raise UserError(f"dataset {data_dir} is incomplete (its writer was "
                    f"interrupted); re-run tools/make_tfrecords.py with the "
                    f"same flags to finish it")
  if info.get("schema_version") != schema.SCHEMA_VERSION:
    raise UserError(f"dataset {data_dir} has schema version "
                    f"{info.get('schema_version')}; this package reads "
                    f"{schema.SCHEMA_VERSION}")
  counts, shards = _counts_and_shards(info, data_dir, info_path)
  if info.get("amplitude_dtype") not in schema.AMPLITUDE_DTYPES or info.get(
      "compression") not in ("none", "gzip"):
    raise UserError(f"{info_path}: amplitude_dtype "
                    f"{info.get('amplitude_dtype')!r} or compression "
                    f"{info.get('compression')!r} is not one this package "
                    f"writes; re-run tools/make_tfrecords.py")
  geometry_path = os.path.join(data_dir, writer.GEOMETRY_FILE)
  geometry = Geometry.load(geometry_path)
  limits.check_object_shape(geometry.object_shape, f"geometry file "
                            f"{geometry_path}")
  return DatasetInfo(data_dir=data_dir, geometry=geometry,
                     counts=counts, shards=shards,
                     amplitude_dtype=info["amplitude_dtype"],
                     compression=info["compression"], flags=info.get("flags", ""),
                     identity=info.get("identity"),
                     objects=bool(info.get("objects", True)),
                     family=info.get("family"))


def _counts_and_shards(info, data_dir, info_path):
  """dataset.json's counts {split: int >= 0} and shard names {split: [name]},
  each name a plain file inside data_dir (`files.dataset_file`)."""
  counts, shards = info.get("counts"), info.get("shards")
  if not isinstance(counts, dict) or not isinstance(shards, dict) or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 0
      for n in counts.values()) or not all(
          isinstance(v, list) for v in shards.values()) or not set(
              shards) <= set(counts):
    raise UserError(f"{info_path} is damaged: expected counts {{split: "
                    f"scans}} and shards {{split: [file names]}}; re-run "
                    f"tools/make_tfrecords.py")
  for split, names in shards.items():
    for name in names:
      files.dataset_file(data_dir, name, f"{info_path} ({split} shards)")
  return dict(counts), {k: list(v) for k, v in shards.items()}


def verify_shards(info, split):
  """Checks that every shard of `split` exists and holds the expected records.

  Walks the TFRecord framing only (fast). Raises UserError naming the first
  missing, truncated or short shard.
  """
  if split not in info.shards:
    raise UserError(f"dataset {info.data_dir} has no split {split!r}; it has "
                    f"{sorted(info.shards)}")
  paths = info.shard_paths(split)
  if not paths and info.counts.get(split, 0) > 0:
    raise UserError(f"dataset {info.data_dir} lists no {split} shards")
  total = 0
  for path in paths:
    n = records.count_records(path, info.compression)
    total += n
  if total != info.counts[split]:
    raise UserError(f"dataset {info.data_dir}: the {split} shards hold {total} "
                    f"scans; dataset.json says {info.counts[split]}")
  return total


# What tf.data raises for a record whose checksum fails (DataLossError) or
# whose payload no longer parses (InvalidArgumentError).
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


def find_damaged_record(info, split, parse=True):
  """Names the first damaged record of a split, or returns None.

  Every shard's framing and data checksums are walked first
  (`records.count_records(verify_data=True)`, no TensorFlow); with `parse`,
  every example is then also decoded, which finds a payload that passes its
  checksum but is not a scan of this dataset.

  Args:
    info: DatasetInfo.
    split: "train" or "test".
    parse: also decode every example (slower).

  Returns:
    A message "TFRecord shard <path> is corrupt: record <i> ..." or None.
  """
  paths = info.shard_paths(split)
  for path in paths:
    try:
      records.count_records(path, info.compression, verify_data=True)
    except records.CorruptShard as e:
      return str(e)
  if not parse:
    return None
  g = info.geometry
  parser = schema.make_parser(g.num_positions, g.probe_shape, g.object_shape,
                              info.amplitude_dtype, objects=info.objects,
                              family=info.family is not None)
  compression = "GZIP" if info.compression == "gzip" else ""
  for path in paths:
    index = 0
    try:
      for _ in tf.data.TFRecordDataset(path, compression).map(parser):
        index += 1
    except tf.errors.DataLossError:
      return (f"TFRecord shard {path} is corrupt: record {index} fails its "
              f"checksum")
    except tf.errors.InvalidArgumentError:
      return (f"TFRecord shard {path} is corrupt: record {index} does not "
              f"parse as a scan of this dataset")
  return None


def damaged_record_advice(data_dir):
  """What to do about a damaged shard (the second half of the error line)."""
  return (f"run python tools/check_tfrecords.py --data_dir={data_dir} --parse, "
          f"then re-run tools/make_tfrecords.py with the dataset's flags "
          f"(it rewrites damaged shards)")


@contextlib.contextmanager
def naming_damaged_records(data_dir, split):
  """Turns tf.data's error about a damaged record into a UserError naming it.

  Wrap the loop that draws batches of `split` from `data_dir`: a
  DataLossError or InvalidArgumentError raised inside is traced to its shard
  and record (`find_damaged_record`; the decoding pass only for an
  InvalidArgumentError) and re-raised as UserError("TFRecord shard <path> is
  corrupt: record <i> fails its checksum; run python tools/check_tfrecords.py
  ..."). An error that no damaged record explains propagates unchanged.
  """
  try:
    yield
  except READ_ERRORS as e:
    try:
      info = load_dataset_info(data_dir)
      found = find_damaged_record(
          info, split, parse=isinstance(e, tf.errors.InvalidArgumentError))
    except UserError:
      found = None
    if found is None:
      raise
    raise UserError(f"{found}; {damaged_record_advice(data_dir)}") from e


def make_dataset(data_dir, split, batch_size, *, shuffle=True, seed=0,
                 repeat=False, input_context=None, drop_remainder=False,
                 shuffle_buffer=64, verify=True):
  """A tf.data.Dataset of batched scans.

  Args:
    data_dir: directory written by tools/make_tfrecords.py.
    split: "train" or "test".
    batch_size: scans per batch (per replica when input_context is given).
    shuffle: shuffle shard order (seeded) and examples (buffer).
    seed: shuffle seed; with repeat, each epoch gets a new order.
    repeat: repeat forever.
    input_context: tf.distribute.InputContext, to shard by input pipeline.
    drop_remainder: drop a final partial batch (static batch dimension).
    shuffle_buffer: examples in the shuffle buffer.
    verify: check shard framing and counts first (fast; names a bad shard).

  Returns:
    Dataset of dicts {"amplitudes": float32 [B, N, h, w],
    "object_amplitude": float32 [B, H, W], "object_phase": float32 [B, H, W]}
    (the amplitudes only for a dataset of measured scans, info.objects False).
    A family dataset's scans differ in N and H, W: batches of one scan,
    with also "positions" float32 [1, N, 2], "probe" float32
    [1, h, w, 2] and "index" int64 [1] (`schema.make_parser`).
  """
  info = load_dataset_info(data_dir)
  if verify:
    verify_shards(info, split)
  if batch_size < 1:
    raise UserError(f"batch_size {batch_size} must be >= 1")
  if info.family and batch_size != 1:
    raise UserError(f"dataset {data_dir} is a family of geometries, whose "
                    f"scans differ in size: batches of whole scans hold one "
                    f"scan (batch_size {batch_size}; train with "
                    f"--refine_batch_size=1)")
  paths = info.shard_paths(split)
  geometry = info.geometry
  files = tf.data.Dataset.from_tensor_slices(paths)
  if shuffle:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
  if input_context is not None and input_context.num_input_pipelines > 1:
    if len(paths) < input_context.num_input_pipelines:
      raise UserError(f"dataset {data_dir} has {len(paths)} {split} shards, "
                      f"fewer than the {input_context.num_input_pipelines} "
                      f"input pipelines; rewrite it with more --num_shards")
    files = files.shard(input_context.num_input_pipelines,
                        input_context.input_pipeline_id)
  compression = "GZIP" if info.compression == "gzip" else ""
  ds = files.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
      cycle_length=min(4, len(paths)), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=not shuffle)
  parse = schema.make_parser(geometry.num_positions, geometry.probe_shape,
                             geometry.object_shape, info.amplitude_dtype,
                             objects=info.objects,
                             family=info.family is not None)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=not shuffle)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE)


def make_pattern_dataset(data_dir, split, batch_size, *, seed=0, repeat=True,
                         input_context=None, shuffle_scans=16,
                         drop_remainder=True, verify=True):
  """A tf.data.Dataset of batches of single patterns, mixed across scans.

  Args:
    data_dir, split, seed, repeat, input_context, verify: as `make_dataset`
      (shards are always shuffled).
    batch_size: scans' worth of patterns per batch: each batch holds
      batch_size * N patterns (per replica with input_context).
    shuffle_scans: the pattern shuffle buffer, in scans (N patterns each);
      0 = no mixing: each batch is the patterns of batch_size whole scans
      (the scans themselves still shuffled), for comparison.
    drop_remainder: drop a final partial batch.

  Returns:
    Dataset of dicts {"amplitudes": float32 [P, h, w] diffraction amplitudes,
    "amplitude", "phase": float32 [P, h, w] the true object patches under
    each pattern's window (not for measured scans)}, P = batch_size * N.
    A family dataset's patterns also carry their scan's "probe" float32
    [P, h, w, 2], and N is the nominal geometry's count.
  """
  info = load_dataset_info(data_dir)
  if shuffle_scans < 0:
    raise UserError(f"shuffle_scans {shuffle_scans} must be >= 0")
  geometry = info.geometry
  n, (h, w) = geometry.num_positions, geometry.probe_shape

  windows = windows_lib.Windows(geometry.layout, geometry.object_shape, (h, w))

  def to_patterns(scan):
    if info.family:
      # The scan's own windows (`PtychoNet.reconstruct_scan`'s frame).
      corners, shape = windows_lib.scan_frame(scan["positions"], (h, w))
      own = windows_lib.Windows.of_corners(corners, shape, (h, w))
      count = tf.shape(scan["amplitudes"])[0]
      return {"amplitudes": scan["amplitudes"],
              "amplitude": own.extract(scan["object_amplitude"]),
              "phase": own.extract(scan["object_phase"]),
              "probe": tf.broadcast_to(scan["probe"], [count, h, w, 2])}
    if not info.objects:  # measured scans: nothing to compare with
      return {"amplitudes": scan["amplitudes"]}
    return {"amplitudes": scan["amplitudes"],
            "amplitude": windows.extract(scan["object_amplitude"]),
            "phase": windows.extract(scan["object_phase"])}

  ds = make_dataset(data_dir, split, 1, shuffle=True, seed=seed, repeat=repeat,
                    input_context=input_context,
                    shuffle_buffer=max(shuffle_scans, 16),
                    verify=verify).unbatch()
  ds = ds.map(to_patterns, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=False).unbatch()
  if shuffle_scans:
    ds = ds.shuffle(shuffle_scans * n, seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size * n, drop_remainder=drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE)
