"""The writer's TensorFlow Datasets metadata: tfds reads what the pipeline reads."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from helpers import write_tiny
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import schema
from ptychonet_tf.data import tfds_info
from ptychonet_tf.data import writer
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator

ARRAYS = (schema.AMPLITUDES, schema.OBJECT_AMPLITUDE, schema.OBJECT_PHASE)


def _write(out, **kwargs):
  """write_tiny's dataset with other WriteConfig fields (e.g. amplitude_dtype)."""
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))
  config = writer.WriteConfig(simulation=sim, **{
      "num_train": 8, "num_test": 2, "num_shards": 2, **kwargs})
  return writer.write_dataset(config, out, workers=1, progress=False)


@pytest.fixture(scope="module", params=["float32", "float16"])
def dataset(request, tmp_path_factory):
  out = str(tmp_path_factory.mktemp(f"tfds_{request.param}") / "ds")
  if request.param == "float32":
    write_tiny(out, num_train=7, num_test=3, num_shards=3)
  else:
    stats = _write(out, num_train=5, num_test=3, num_shards=2,
                   amplitude_dtype="float16")
    assert stats["tfds_metadata"]
  return out, request.param


def _tfds_examples(data_dir, split):
  builder = tfds.builder_from_directory(data_dir)
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _pipeline_examples(data_dir, split):
  ds = pipeline.make_dataset(data_dir, split, 1, shuffle=False)
  return [{k: v[0] for k, v in batch.items()} for batch in tfds.as_numpy(ds)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_tfds_reads_every_example_like_the_pipeline(dataset, split):
  data_dir, amp_dtype = dataset
  info = pipeline.load_dataset_info(data_dir)
  tfds_examples = _tfds_examples(data_dir, split)
  assert sorted(int(ex[schema.INDEX]) for ex in tfds_examples) == list(
      range(info.counts[split]))
  for ex in tfds_examples:
    assert ex[schema.AMPLITUDES].dtype == np.dtype(amp_dtype)
    assert ex[schema.AMPLITUDES].shape == (info.geometry.num_positions,
                                           *info.geometry.probe_shape)
    assert ex[schema.OBJECT_AMPLITUDE].shape == tuple(info.geometry.object_shape)
    assert ex[schema.OBJECT_PHASE].dtype == np.float32
  # The pipeline drops the index and interleaves shards: match each of its
  # scans to tfds' by the (random, so unique) object amplitude.
  by_object = {ex[schema.OBJECT_AMPLITUDE].tobytes(): ex for ex in tfds_examples}
  assert len(by_object) == len(tfds_examples)
  seen = []
  for ex in _pipeline_examples(data_dir, split):
    match = by_object[ex[schema.OBJECT_AMPLITUDE].tobytes()]
    seen.append(int(match[schema.INDEX]))
    for key in ARRAYS:  # float16 amplitudes widen to float32 exactly
      np.testing.assert_array_equal(match[key].astype(np.float32), ex[key])
  assert sorted(seen) == list(range(info.counts[split]))


def test_tfds_info_matches_dataset_json(dataset):
  data_dir, amp_dtype = dataset
  info = pipeline.load_dataset_info(data_dir)
  builder = tfds.builder_from_directory(data_dir)
  assert builder.info.name == tfds_info.TFDS_NAME
  assert str(builder.info.version) == tfds_info.tfds_version()
  assert sorted(builder.info.splits.keys()) == ["test", "train"]
  for split in ("train", "test"):
    split_info = builder.info.splits[split]
    assert split_info.num_examples == info.counts[split]
    assert split_info.filenames == sorted(info.shards[split])
    assert split_info.num_bytes == sum(
        os.path.getsize(p) for p in info.shard_paths(split))
  features = builder.info.features
  assert features[schema.AMPLITUDES].dtype == np.dtype(amp_dtype)
  assert features[schema.OBJECT_PHASE].shape == tuple(info.geometry.object_shape)
  with open(os.path.join(data_dir, "metadata.json")) as f:
    assert json.load(f) == {
        "schema_version": schema.SCHEMA_VERSION,
        "num_positions": info.geometry.num_positions,
        "probe_shape": list(info.geometry.probe_shape),
        "object_shape": list(info.geometry.object_shape),
        "amplitude_dtype": amp_dtype}


def test_tfds_encoding_is_the_schema_bytes(dataset):
  """tfds' own encoding of what it decodes is the bytes schema.encode wrote."""
  data_dir, _ = dataset
  features = tfds.builder_from_directory(data_dir).info.features
  shard = pipeline.load_dataset_info(data_dir).shard_paths("train")[0]
  raw = next(iter(tf.data.TFRecordDataset(shard))).numpy()
  stored = tf.train.Example.FromString(raw).features.feature
  index = stored[schema.INDEX].int64_list.value[0]
  (decoded,) = [ex for ex in _tfds_examples(data_dir, "train")
                if ex[schema.INDEX] == index]
  for key in ARRAYS:
    assert features[key].encode_example(decoded[key]) == (
        stored[key].bytes_list.value[0])


@pytest.mark.parametrize("count", [1, 3, 12, 99999])
def test_filename_template_gives_the_writer_shard_names(count):
  template = tfds.core.ShardedFileTemplate(
      data_dir="/x", template=tfds_info.FILENAME_TEMPLATE, split="train",
      filetype_suffix=tfds_info.FILE_FORMAT)
  for i in {0, count // 2, count - 1}:
    assert template.relative_filepath(shard_index=i, num_shards=count) == (
        writer.shard_name("train", i, count))


def _snapshot(data_dir):
  out = {}
  for name in sorted(os.listdir(data_dir)):
    if name.endswith(".tfrecord") or name in tfds_info.METADATA_FILES:
      with open(os.path.join(data_dir, name), "rb") as f:
        out[name] = f.read()
  return out


def test_resume_keeps_shards_and_rewrites_the_metadata(tmp_path):
  data_dir = str(tmp_path / "ds")
  write_tiny(data_dir, num_train=4, num_test=2, num_shards=2)
  before = _snapshot(data_dir)
  assert set(tfds_info.METADATA_FILES) <= set(before)
  # A damaged dataset: one shard gone, the tfds metadata garbage.
  os.remove(os.path.join(data_dir, "train-00001-of-00002.tfrecord"))
  with open(os.path.join(data_dir, tfds_info.DATASET_INFO_FILE), "w") as f:
    f.write("{not json")
  stats = _write(data_dir, num_train=4, num_test=2, num_shards=2)
  assert (stats["written"], stats["kept"], stats["tfds_metadata"]) == (1, 3, True)
  assert _snapshot(data_dir) == before
  # Nothing left to write: shards kept, metadata rewritten to the same bytes.
  stats = _write(data_dir, num_train=4, num_test=2, num_shards=2)
  assert (stats["written"], stats["kept"]) == (0, 4)
  assert _snapshot(data_dir) == before
  assert not [n for n in os.listdir(data_dir) if n.endswith(".tmp")]
  builder = tfds.builder_from_directory(data_dir)
  assert builder.info.splits["train"].num_examples == 4
  assert len(_tfds_examples(data_dir, "train")) == 4


def test_gzip_dataset_gets_no_tfds_metadata(tmp_path):
  data_dir = str(tmp_path / "ds")
  stats = _write(data_dir, num_train=2, num_test=1, num_shards=1,
                 compression="gzip")
  assert not stats["tfds_metadata"]
  assert not set(tfds_info.METADATA_FILES) & set(os.listdir(data_dir))
  assert len(_pipeline_examples(data_dir, "train")) == 2


def test_without_tfds_a_rerun_adds_the_metadata(tmp_path, monkeypatch):
  data_dir = str(tmp_path / "ds")
  with monkeypatch.context() as m:
    m.setattr(tfds_info, "available", lambda: False)
    stats = _write(data_dir, num_train=2, num_test=1, num_shards=1)
  assert not stats["tfds_metadata"]
  shards = {n: b for n, b in _snapshot(data_dir).items()
            if n.endswith(".tfrecord")}
  assert not set(tfds_info.METADATA_FILES) & set(os.listdir(data_dir))
  stats = _write(data_dir, num_train=2, num_test=1, num_shards=1)
  assert (stats["written"], stats["tfds_metadata"]) == (0, True)
  after = _snapshot(data_dir)
  assert {n: after[n] for n in shards} == shards
  assert tfds.builder_from_directory(data_dir).info.splits[
      "test"].num_examples == 1
