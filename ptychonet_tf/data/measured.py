"""Datasets of measured scans: the TFRecord layout without objects.

Measured scans have no ground truth, so their records hold the amplitudes
only and dataset.json says `"objects": false`; such a dataset trains with
`--loss=physics` (the data misfit of the model's own reconstruction) and its
held-out figure is that misfit. Every scan of a dataset shares one geometry:
the layout, the object size and the probe (geometry.npz), which for measured
data is the probe a DM run with probe refinement found
(`tools/make_tfrecords.py --scans=...`).

The split: the last `num_test` scans are the test split; with num_test=0
(the default for a single scan) the test split holds the training scans
again, since there is nothing held out to compare with anyway.
"""
import dataclasses
import hashlib
import json
import os
from typing import Tuple

import numpy as np

from ptychonet_tf.data import records
from ptychonet_tf.data import schema
from ptychonet_tf.data import tfds_info
from ptychonet_tf.data import writer
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError


@dataclasses.dataclass(frozen=True)
class MeasuredConfig:
  """What makes a measured dataset (its identity in dataset.json).

  Attributes:
    files: the scan files, in order.
    sha256: their checksums.
    probe_iterations: DM iterations with probe refinement that found the
      probe (0: the files' own probe).
    num_test: the last num_test scans form the test split (0: the test split
      repeats the training scans).
    amplitude_dtype: storage dtype of the amplitudes.
  """
  files: Tuple[str, ...]
  sha256: Tuple[str, ...]
  probe_iterations: int = 0
  num_test: int = 0
  amplitude_dtype: str = "float32"

  def identity(self):
    return {"measured": [{"file": os.path.basename(f), "sha256": h}
                         for f, h in zip(self.files, self.sha256)],
            "probe_iterations": self.probe_iterations,
            "num_test": self.num_test,
            "amplitude_dtype": self.amplitude_dtype}


def file_sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def check_same_geometry(scans, names):
  """Raises UserError naming the first scan whose geometry differs from the
  first one's (pattern size, positions or object size)."""
  first = scans[0]
  for scan, name in zip(scans[1:], names[1:]):
    if (scan.amplitudes.shape[1:] != first.amplitudes.shape[1:] or
        tuple(scan.object_shape) != tuple(first.object_shape) or
        scan.layout.shape != first.layout.shape or
        (scan.layout != first.layout).any()):
      raise UserError(
          f"scan {name} has another geometry than {names[0]} ({len(scan.layout)}"
          f" positions on {scan.object_shape[0]}x{scan.object_shape[1]}, "
          f"against {len(first.layout)} on {first.object_shape[0]}x"
          f"{first.object_shape[1]}, or other positions); a dataset holds "
          f"scans of one geometry")


def _complete(out_dir, info_path, counts):
  """Whether out_dir holds the complete dataset: dataset.json says so, and
  every shard it lists is there with its records (a deleted or damaged
  shard makes the dataset incomplete, so that a re-run rewrites it)."""
  try:
    with open(info_path) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(info, dict) or not info.get("complete"):
    return False
  shards = info.get("shards")
  if not isinstance(shards, dict) or not os.path.isfile(
      os.path.join(out_dir, writer.GEOMETRY_FILE)):
    return False
  for split, count in counts.items():
    names = shards.get(split)
    if not isinstance(names, list):
      return False
    total = 0
    for name in names:
      try:
        total += records.count_records(
            files.dataset_file(out_dir, name, info_path), verify_data=True)
      except UserError:
        return False
    if total != count:
      return False
  return True


def write_measured_dataset(scans, probe, out_dir, config, flags_string=""):
  """Writes measured scans as a dataset without objects.

  Args:
    scans: data.scanfile.Scan list, one geometry (`check_same_geometry`).
    probe: complex64 [h, w], the probe stored in geometry.npz, or a
      callable that returns it, called only when the dataset is written
      (not for one already complete, e.g. a DM probe refinement).
    out_dir: the dataset directory (created if needed). A complete dataset
      of the same identity there is kept as it is; one of another identity
      is refused.
    config: MeasuredConfig.
    flags_string: the resolved flags, stored in dataset.json.

  Returns:
    dict "train", "test": scan counts; "kept": whether it was already there.
  """
  if not scans:
    raise UserError("no scans given")
  if not 0 <= config.num_test < len(scans):
    raise UserError(f"--num_test={config.num_test} must be in [0, "
                    f"{len(scans) - 1}] for {len(scans)} scan(s): the training "
                    f"split needs one")
  writer.check_out_dir(out_dir, config)
  info_path = os.path.join(out_dir, writer.INFO_FILE)
  train = scans[:len(scans) - config.num_test]
  test = scans[len(scans) - config.num_test:] if config.num_test else train
  if _complete(out_dir, info_path, {"train": len(train), "test": len(test)}):
    return {"train": len(train), "test": len(test), "kept": True}
  first = scans[0]
  if callable(probe):
    probe = probe()
  geometry = geometry_lib.Geometry(
      probe=np.asarray(probe, np.complex64),
      layout=np.asarray(first.layout, np.int32),
      object_shape=tuple(int(s) for s in first.object_shape))
  tfds_info.remove_metadata(out_dir)
  geometry.save(os.path.join(out_dir, writer.GEOMETRY_FILE))
  shards = {}
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for split, chosen in (("train", train), ("test", test)):
    name = writer.shard_name(split, 0, 1)
    shards[split] = [name]

    def write(tmp, chosen=chosen):
      with tf.io.TFRecordWriter(tmp) as out:
        for i, scan in enumerate(chosen):
          out.write(schema.encode(
              scan.amplitudes.astype(np.float32), None, None, i,
              num_positions=geometry.num_positions,
              probe_shape=geometry.probe_shape,
              object_shape=geometry.object_shape,
              amplitude_dtype=config.amplitude_dtype))

    files.atomic_write(os.path.join(out_dir, name), write)
  writer.write_info(out_dir, geometry, shards,
                    {"train": len(train), "test": len(test)},
                    config.identity(), complete=True,
                    amplitude_dtype=config.amplitude_dtype,
                    compression="none", flags_string=flags_string,
                    objects=False)
  return {"train": len(train), "test": len(test), "kept": False}
