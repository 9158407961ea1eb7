"""TFRecord schema: one tf.train.Example per simulated scan.

Arrays are stored as raw little-endian bytes with fixed shapes given by the
dataset's geometry (dataset.json / geometry.npz):

  amplitudes        [N, h, w] float32 or float16 (dataset.json "amplitude_dtype")
  object_amplitude  [H, W] float32 (absent in datasets of measured scans,
  object_phase      [H, W] float32  dataset.json "objects": false)
  index             int64, the scan's index within its split
  schema_version    int64, SCHEMA_VERSION

A family dataset (dataset.json "family", `make_tfrecords --family`) holds
scans of different geometries: each record also has its own

  positions         [N, 2] float32 (y, x) pixels, the smallest at 0
  probe             [h, w, 2] float32, the probe's real and imaginary planes
  object_shape      int64 [2] (H, W) of this scan's object

and its amplitudes [N, h, w] and object [H, W] take this scan's N and H, W
(`windows.scan_frame` of the positions gives the windows and the object).
"""
import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1

AMPLITUDES = "amplitudes"
OBJECT_AMPLITUDE = "object_amplitude"
OBJECT_PHASE = "object_phase"
INDEX = "index"
VERSION = "schema_version"
POSITIONS = "positions"
PROBE = "probe"
OBJECT_SHAPE = "object_shape"

AMPLITUDE_DTYPES = {"float32": np.float32, "float16": np.float16}


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _check(name, array, shape, dtype):
  if array.shape != tuple(shape) or array.dtype != dtype:
    raise ValueError(f"{name} has shape {array.shape} {array.dtype}; the schema "
                     f"expects {tuple(shape)} {np.dtype(dtype)}")


def encode(amplitudes, object_amplitude, object_phase, index, *,
           num_positions, probe_shape, object_shape, amplitude_dtype="float32",
           positions=None, probe=None):
  """Serialises one scan; checks every dtype and shape against the spec.

  object_amplitude and object_phase are both None for a measured scan (no
  object is known); the record then holds the amplitudes only. A scan of a
  family dataset gives its own `positions` float32 [N, 2] and `probe`
  complex [h, w] (and its own num_positions and object_shape).
  """
  amps = np.asarray(amplitudes).astype(AMPLITUDE_DTYPES[amplitude_dtype])
  _check(AMPLITUDES, amps, (num_positions, *probe_shape),
         AMPLITUDE_DTYPES[amplitude_dtype])
  feature = {
      AMPLITUDES: _bytes(amps.astype(amps.dtype.newbyteorder("<")).tobytes()),
      INDEX: _int(index),
      VERSION: _int(SCHEMA_VERSION),
  }
  if (positions is None) != (probe is None):
    raise ValueError("give both positions and probe, or neither")
  if positions is not None:
    positions = np.asarray(positions)
    _check(POSITIONS, positions, (num_positions, 2), np.float32)
    probe = np.asarray(probe)
    _check(PROBE, probe, tuple(probe_shape), np.complex64)
    planes = np.stack([probe.real, probe.imag], -1).astype("<f4")
    feature[POSITIONS] = _bytes(positions.astype("<f4").tobytes())
    feature[PROBE] = _bytes(planes.tobytes())
    feature[OBJECT_SHAPE] = tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(s) for s in object_shape]))
  if (object_amplitude is None) != (object_phase is None):
    raise ValueError("give both object_amplitude and object_phase, or neither")
  if object_amplitude is not None:
    _check(OBJECT_AMPLITUDE, object_amplitude, object_shape, np.float32)
    _check(OBJECT_PHASE, object_phase, object_shape, np.float32)
    feature[OBJECT_AMPLITUDE] = _bytes(
        object_amplitude.astype("<f4").tobytes())
    feature[OBJECT_PHASE] = _bytes(object_phase.astype("<f4").tobytes())
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  # deterministic=True sorts the feature map, so bytes do not depend on the
  # process (Python hash seed).
  return example.SerializeToString(deterministic=True)


def make_parser(num_positions, probe_shape, object_shape,
                amplitude_dtype="float32", objects=True, family=False):
  """A tf function: serialized Example -> dict of float32 tensors with static shapes.

  Returns dicts {amplitudes [N, h, w], object_amplitude [H, W],
  object_phase [H, W]}, all float32; {amplitudes} only with objects=False
  (measured scans). A record whose byte sizes do not match the spec fails
  with InvalidArgumentError naming the feature. With `family` (a family
  dataset; num_positions and object_shape are then not used) each scan
  has its own N and H, W, and the dict also holds "positions" float32
  [N, 2], "probe" float32 [h, w, 2] and "index" int64 (the scan's index in
  its split, which seeds its draw).
  """
  description = {AMPLITUDES: tf.io.FixedLenFeature([], tf.string)}
  if family:
    description[POSITIONS] = tf.io.FixedLenFeature([], tf.string)
    description[PROBE] = tf.io.FixedLenFeature([], tf.string)
    description[OBJECT_SHAPE] = tf.io.FixedLenFeature([2], tf.int64)
    description[INDEX] = tf.io.FixedLenFeature([], tf.int64)
  if objects:
    description[OBJECT_AMPLITUDE] = tf.io.FixedLenFeature([], tf.string)
    description[OBJECT_PHASE] = tf.io.FixedLenFeature([], tf.string)
  amp_dtype = tf.as_dtype(AMPLITUDE_DTYPES[amplitude_dtype])
  amp_shape = [num_positions, *probe_shape]

  def decode(raw, dtype, shape, name):
    values = tf.io.decode_raw(raw, dtype, little_endian=True)
    tf.debugging.assert_equal(
        tf.size(values), tf.reduce_prod(shape),
        message=f"TFRecord feature {name} does not hold {shape} values")
    return tf.cast(tf.reshape(values, shape), tf.float32)

  def parse(serialized):
    ex = tf.io.parse_single_example(serialized, description)
    if family:
      # The scan's own count and object: from its positions and shape.
      positions = tf.io.decode_raw(ex[POSITIONS], tf.float32,
                                   little_endian=True)
      count = tf.size(positions) // 2
      scan_shape = tf.cast(ex[OBJECT_SHAPE], tf.int32)
      out = {AMPLITUDES: decode(ex[AMPLITUDES], amp_dtype,
                                tf.stack([count, *probe_shape]), AMPLITUDES),
             POSITIONS: tf.reshape(positions, [count, 2]),
             PROBE: decode(ex[PROBE], tf.float32, [*probe_shape, 2], PROBE),
             INDEX: ex[INDEX]}
    else:
      out = {AMPLITUDES: decode(ex[AMPLITUDES], amp_dtype, amp_shape,
                                AMPLITUDES)}
    if objects and family:
      out[OBJECT_AMPLITUDE] = decode(ex[OBJECT_AMPLITUDE], tf.float32,
                                     scan_shape, OBJECT_AMPLITUDE)
      out[OBJECT_PHASE] = decode(ex[OBJECT_PHASE], tf.float32, scan_shape,
                                 OBJECT_PHASE)
    elif objects:
      out[OBJECT_AMPLITUDE] = decode(ex[OBJECT_AMPLITUDE], tf.float32,
                                     list(object_shape), OBJECT_AMPLITUDE)
      out[OBJECT_PHASE] = decode(ex[OBJECT_PHASE], tf.float32,
                                 list(object_shape), OBJECT_PHASE)
    return out

  return parse
