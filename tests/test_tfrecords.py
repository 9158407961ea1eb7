"""TFRecord writer and tf.data pipeline: round trip, determinism, resume, errors."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, run_cli
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import records
from ptychonet_tf.data import writer
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator

TINY_FLAGS = ["--probe_size=16,16", "--scan=fermat", "--scan_count=10",
              "--scan_step=1.5", "--num_shards=3"]


def tiny_config(num_train=7, num_test=3, **kw):
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))
  return writer.WriteConfig(simulation=sim, num_train=num_train,
                            num_test=num_test, num_shards=3, **kw)


def digest(folder):
  h = hashlib.sha256()
  for name in sorted(os.listdir(folder)):
    if name.endswith(".tfrecord") or name == "geometry.npz":
      with open(os.path.join(folder, name), "rb") as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ds"))
  writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  return out


def test_counts_and_metadata(dataset):
  info = pipeline.load_dataset_info(dataset)
  assert info.counts == {"train": 7, "test": 3}
  assert len(info.shards["train"]) == 3 and len(info.shards["test"]) == 3
  assert info.shards["train"][0] == "train-00000-of-00003.tfrecord"
  assert sum(records.count_records(p) for p in info.shard_paths("train")) == 7
  with open(os.path.join(dataset, "dataset.json")) as f:
    meta = json.load(f)
  assert meta["complete"] and meta["num_positions"] == 10
  assert meta["probe_shape"] == [16, 16] and meta["amplitude_dtype"] == "float32"


def test_round_trip_matches_simulation(dataset):
  info = pipeline.load_dataset_info(dataset)
  batches = list(pipeline.make_dataset(dataset, "test", 2, shuffle=False))
  assert [b["amplitudes"].shape[0] for b in batches] == [2, 1]
  b = batches[0]
  assert b["amplitudes"].shape == (2, 10, 16, 16)
  assert b["object_amplitude"].shape == (2, *info.geometry.object_shape)
  obj = (b["object_amplitude"].numpy() * np.exp(1j * b["object_phase"].numpy())).astype(np.complex64)
  expected = simulator.Simulator(info.geometry).amplitudes(obj)
  np.testing.assert_allclose(b["amplitudes"].numpy(), expected, rtol=1e-4, atol=1e-5)
  # Scan 0 of the test split is the object scan_rng(seed, "test", 0) gives.
  from ptychonet_tf.data import images as images_lib
  _, test_pool = images_lib.open_image_pools("default")
  obj0 = simulator.random_object(test_pool, info.geometry.object_shape,
                                  tiny_config().simulation.object,
                                  simulator.scan_rng(0, "test", 0), images_lib.load_image)
  np.testing.assert_allclose(np.abs(obj0), b["object_amplitude"][0].numpy(), rtol=1e-6)


def test_same_seed_same_bytes_another_seed_other_bytes(dataset, tmp_path):
  """Bytes depend on the seed alone: test_sigkill_then_resume compares shards
  of two pool workers and of one resuming worker with an in-process write."""
  writer.write_dataset(tiny_config(), str(tmp_path / "a"), workers=1, progress=False)
  assert digest(str(tmp_path / "a")) == digest(dataset)
  writer.write_dataset(tiny_config(seed=1), str(tmp_path / "b"), workers=1, progress=False)
  assert digest(str(tmp_path / "b")) != digest(dataset)


def test_resume_rewrites_only_missing_or_damaged_shards(dataset, tmp_path):
  out = str(tmp_path / "r")
  writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  os.remove(os.path.join(out, "train-00001-of-00003.tfrecord"))
  with open(os.path.join(out, "test-00002-of-00003.tfrecord"), "r+b") as f:
    f.truncate(100)
  # A flipped payload byte: the framing still checks out, the data CRC not.
  with open(os.path.join(out, "train-00000-of-00003.tfrecord"), "r+b") as f:
    f.seek(5000)
    f.write(b"\xff\xff\xff\xff")
  stats = writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  assert stats["written"] == 3 and stats["kept"] == 3
  assert digest(out) == digest(dataset)


def test_other_settings_in_same_dir_refused(dataset):
  with pytest.raises(UserError, match="num_train differ"):
    writer.write_dataset(tiny_config(num_train=8), dataset, workers=1, progress=False)


def test_dataset_written_before_a_new_setting_is_kept(dataset, tmp_path):
  """A setting added later (None by default, e.g. the scan's `file`) is
  absent from older dataset.json identities: the same dataset, kept."""
  out = str(tmp_path / "old")
  shutil.copytree(dataset, out)
  path = os.path.join(out, writer.INFO_FILE)
  with open(path) as f:
    info = json.load(f)
  scan = info["identity"]["simulation"]["geometry"]["scan"]
  assert "file" in scan and scan.pop("file") is None
  with open(path, "w") as f:
    json.dump(info, f)
  stats = writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  assert stats["written"] == 0 and digest(out) == digest(dataset)


def test_truncated_shard_is_named(tmp_path):
  out = str(tmp_path / "t")
  writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  shard = os.path.join(out, "train-00002-of-00003.tfrecord")
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size - 50)
  with pytest.raises(UserError, match="train-00002-of-00003.tfrecord is truncated"):
    pipeline.make_dataset(out, "train", 2)


def _crc32c_bytewise(data):
  """A reference CRC-32C (reflected polynomial 0x82F63B78), bit by bit."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def test_crc32c_matches_the_reference():
  assert records.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  rng = np.random.default_rng(0)
  for n in (0, 1, 255, 4095, 4096, 4097, 70001):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert records.crc32c(data) == _crc32c_bytewise(data), n
    assert records.crc32c(memoryview(data)) == _crc32c_bytewise(data), n


def flip_bytes(path, offset=5000, data=b"\xff\xff\xff\xff"):
  """What `printf '\\xff\\xff\\xff\\xff' | dd of=PATH bs=1 seek=5000
  conv=notrunc` does: a damaged payload, framing intact."""
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(data)


def test_flipped_payload_byte_is_named(dataset, tmp_path):
  out = str(tmp_path / "f")
  shutil.copytree(dataset, out)
  shard = os.path.join(out, "train-00001-of-00003.tfrecord")
  n = records.count_records(shard, verify_data=True)  # TF's CRCs agree
  assert n >= 2
  record_size = os.path.getsize(shard) // n  # records of equal size
  flip_bytes(shard, offset=(n - 1) * record_size + 5000)  # in the last one
  assert records.count_records(shard) == n  # the framing is intact
  with pytest.raises(UserError, match=f"record {n - 1} fails its checksum"):
    records.count_records(shard, verify_data=True)
  info = pipeline.load_dataset_info(out)
  assert pipeline.find_damaged_record(info, "test") is None
  assert pipeline.find_damaged_record(info, "train", parse=False) == (
      f"TFRecord shard {shard} is corrupt: record {n - 1} fails its checksum")
  # Reading it: tf.data's DataLossError becomes one line naming the record.
  with pytest.raises(UserError) as raised:
    with pipeline.naming_damaged_records(out, "train"):
      for _ in pipeline.make_dataset(out, "train", 2, shuffle=False):
        pass
  message = str(raised.value)
  assert message.startswith(f"TFRecord shard {shard} is corrupt: record {n - 1} "
                            f"fails its checksum; run python "
                            f"tools/check_tfrecords.py --data_dir={out} --parse")
  assert "\n" not in message
  # Other errors pass through unchanged.
  with pytest.raises(tf.errors.InvalidArgumentError, match="unrelated"):
    with pipeline.naming_damaged_records(dataset, "train"):
      raise tf.errors.InvalidArgumentError(None, None, "unrelated")


def test_payload_that_does_not_parse_is_named(dataset, tmp_path):
  out = str(tmp_path / "p")
  shutil.copytree(dataset, out)
  shard = os.path.join(out, "test-00002-of-00003.tfrecord")
  with tf.io.TFRecordWriter(shard) as w:  # valid checksums, not an Example
    w.write(b"not a scan")
  with pytest.raises(UserError, match=r"test-00002-of-00003.tfrecord is "
                     r"corrupt: record 0 does not parse as a scan"):
    with pipeline.naming_damaged_records(out, "test"):
      for _ in pipeline.make_dataset(out, "test", 1, shuffle=False):
        pass


def test_pattern_dataset_mixes_scans_and_pairs_patches(dataset):
  info = pipeline.load_dataset_info(dataset)
  g = info.geometry
  scans = list(pipeline.make_dataset(dataset, "train", 1, shuffle=False))
  # Every (pattern, true patch) pair of the split, keyed by the pattern bytes.
  pairs = {}
  for scan in scans:
    amp = scan["object_amplitude"][0].numpy()
    phase = scan["object_phase"][0].numpy()
    for j, (t, b, l, r) in enumerate(g.layout):
      pairs[scan["amplitudes"][0, j].numpy().tobytes()] = (amp[t:b, l:r],
                                                          phase[t:b, l:r])
  ds = pipeline.make_pattern_dataset(dataset, "train", 2, seed=3,
                                     repeat=False, shuffle_scans=4)
  batches = list(ds)
  n = g.num_positions
  assert len(batches) == (7 * n) // (2 * n)  # drop_remainder
  for batch in batches:
    assert batch["amplitudes"].shape == (2 * n, 16, 16)
    assert batch["amplitude"].shape == batch["phase"].shape == (2 * n, 16, 16)
    for k in range(2 * n):
      key = batch["amplitudes"][k].numpy().tobytes()
      amp, phase = pairs[key]  # the pattern is one of the split's
      np.testing.assert_array_equal(batch["amplitude"][k].numpy(), amp)
      np.testing.assert_array_equal(batch["phase"][k].numpy(), phase)
  # A batch of 2 scans' worth of patterns draws on more than 2 objects.
  scan_of = {key: i for i, scan in enumerate(scans)
             for key in (scan["amplitudes"][0, j].numpy().tobytes()
                         for j in range(n))}
  mixed = [len({scan_of[batch["amplitudes"][k].numpy().tobytes()]
                for k in range(2 * n)}) for batch in batches]
  assert max(mixed) > 2, mixed
  # shuffle_scans=0: every batch is the patterns of 2 whole scans.
  whole = pipeline.make_pattern_dataset(dataset, "train", 2, seed=3,
                                        repeat=False, shuffle_scans=0)
  for batch in whole:
    objects = [scan_of[batch["amplitudes"][k].numpy().tobytes()]
               for k in range(2 * n)]
    assert objects[:n] == [objects[0]] * n and objects[n:] == [objects[n]] * n
  with pytest.raises(UserError, match="shuffle_scans"):
    pipeline.make_pattern_dataset(dataset, "train", 2, shuffle_scans=-1)


def test_sharding_by_input_context(dataset):
  seen = []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=2)
    ds = pipeline.make_dataset(dataset, "train", 1, shuffle=False, input_context=ctx)
    seen.append(sorted(float(b["object_phase"].numpy().sum()) for b in ds))
  assert len(seen[0]) + len(seen[1]) == 7
  assert not set(seen[0]) & set(seen[1])


def test_float16_and_gzip(tmp_path):
  out = str(tmp_path / "h")
  writer.write_dataset(tiny_config(amplitude_dtype="float16", compression="gzip"),
                       out, workers=1, progress=False)
  b = next(iter(pipeline.make_dataset(out, "train", 7, shuffle=False)))
  info = pipeline.load_dataset_info(out)
  obj = (b["object_amplitude"].numpy() * np.exp(1j * b["object_phase"].numpy())).astype(np.complex64)
  expected = simulator.Simulator(info.geometry).amplitudes(obj)
  np.testing.assert_allclose(b["amplitudes"].numpy(), expected, rtol=2e-3, atol=1e-3)


def test_pipeline_errors(tmp_path, dataset):
  with pytest.raises(UserError, match="does not exist"):
    pipeline.load_dataset_info(str(tmp_path / "none"))
  with pytest.raises(UserError, match="holds no dataset.json"):
    pipeline.load_dataset_info(str(tmp_path))
  with pytest.raises(UserError, match="no split"):
    pipeline.make_dataset(dataset, "valid", 2)


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
  out = tmp_path / "k"
  # One worker: the writing process itself is killed mid-shard (pool
  # workers, which each import TensorFlow, are what the next test and the
  # worker-count test above cover).
  cmd = [sys.executable, "tools/make_tfrecords.py", "--flagfile=configs/small_dense.flags",
         f"--out_dir={out}", "--num_train=40", "--num_test=4", "--num_shards=8",
         "--workers=1", "--noprogress"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline:
    done = [n for n in os.listdir(out) if n.endswith(".tfrecord")] if out.exists() else []
    if len(done) >= 2:
      break
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGKILL)  # the tool and its workers, mid-run
  proc.wait()
  finished_before = {n for n in os.listdir(out) if n.endswith(".tfrecord")}
  assert 2 <= len(finished_before) < 16
  # Resumed in a fork of the test's interpreter (run_cli), which has
  # imported TensorFlow already.
  res = run_cli(cmd[1:], timeout=600)
  assert res.returncode == 0, res.stderr
  assert f"{len(finished_before)} kept" in res.stdout
  info = pipeline.load_dataset_info(str(out))
  assert pipeline.verify_shards(info, "train") == 40
  assert pipeline.verify_shards(info, "test") == 4
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
  n = sum(int(b["amplitudes"].shape[0]) for b in pipeline.make_dataset(str(out), "train", 8))
  assert n == 40
  # The same bytes as one run writing it all: shards of the killed run and
  # of the resumed one alike.
  reference = tmp_path / "one"
  res = run_cli([*cmd[1:], f"--out_dir={reference}"])
  assert res.returncode == 0, res.stderr
  assert digest(str(out)) == digest(str(reference))


@pytest.mark.slow
def test_check_tool_parses_every_record(tmp_path):
  out = str(tmp_path / "c")
  writer.write_dataset(tiny_config(), out, workers=1, progress=False)
  res = run_cli(["tools/check_tfrecords.py", f"--data_dir={out}", "--parse"])
  assert res.returncode == 0, res.stderr
  assert "train: 7 scans in 3 shards" in res.stdout and "all parsed" in res.stdout
  # Damaged shards: rows of tests/test_bad_inputs.py.


def test_a_worker_process_that_dies_ends_the_write_in_one_line():
  """multiprocessing.Pool replaces a dead worker and waits forever for its
  shard; the writer's pool fails at once with a line that says to resume."""
  import pool_tasks  # pylint: disable=g-import-not-at-top

  class Bar:
    def update(self, n):
      del n

  started = time.time()
  with pytest.raises(UserError, match="worker process died.*resume"):
    writer.run_pool([0, 1, 2, 3], 2, (), Bar(), function=pool_tasks.exit_on_one,
                    initializer=pool_tasks.setup)
  assert time.time() - started < 60
