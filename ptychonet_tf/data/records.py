"""Checks TFRecord files without TensorFlow: framing, and on request checksums.

A TFRecord file is a sequence of records: uint64 length, uint32 masked
CRC-32C of the length, `length` data bytes, uint32 masked CRC-32C of the data.
`count_records` walks the headers (and verifies each length CRC), so a
truncated or garbled shard is found in milliseconds and named, before a
training job trips over it. With `verify_data=True` it also checks each
record's data CRC, so a flipped byte inside a payload (framing intact) is
named by shard and record index; `crc32c` computes long payloads with numpy
(about 200 MB/s; `google_crc32c` when it is installed), not byte by byte.
"""
import functools
import gzip
import os
import struct
import zlib

import numpy as np

from ptychonet_tf.utils.errors import UserError

try:
  import google_crc32c as _google_crc32c  # pylint: disable=g-import-not-at-top
except ImportError:
  _google_crc32c = None


def _crc32c_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()
_TABLE_NP = np.array(_TABLE, np.uint32)
# Inputs this long or longer are computed in _CHUNK-byte chunks with numpy.
_CHUNK_BITS = 8
_CHUNK = 1 << _CHUNK_BITS
_VECTOR_MIN = 16 * _CHUNK


def _update_bytes(crc, data):
  """The raw CRC-32C register after feeding `data` byte by byte."""
  table = _TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc


def _apply(columns, value):
  """A GF(2) 32x32 matrix (its 32 columns) times the 32-bit vector `value`."""
  out, i = 0, 0
  while value:
    if value & 1:
      out ^= columns[i]
    value >>= 1
    i += 1
  return out


@functools.lru_cache(maxsize=None)
def _zeros_operator(k):
  """Columns of the linear map "feed 2**k zero bytes" on the raw register."""
  if k == 0:
    return tuple(_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
  half = _zeros_operator(k - 1)
  return tuple(_apply(half, c) for c in half)


def _feed_zeros(crc, count):
  """The raw register after feeding `count` zero bytes."""
  k = 0
  while count:
    if count & 1:
      crc = _apply(_zeros_operator(k), crc)
    count >>= 1
    k += 1
  return crc


def _apply_vector(columns, values):
  """`_apply` on a uint32 numpy array of vectors."""
  columns = np.asarray(columns, np.uint32)
  out = np.zeros_like(values)
  for i in range(32):
    out ^= ((values >> np.uint32(i)) & np.uint32(1)) * columns[i]
  return out


def _update_vector(crc, data):
  """`_update_bytes` for long inputs: chunks in parallel, then combined.

  The raw register is linear over GF(2): feeding A then B from state s gives
  Z_|B|(raw(s, A)) ^ raw(0, B), Z_n the map "feed n zero bytes". Each chunk's
  raw(0, chunk) is computed at once across chunks (one numpy step per byte
  position), and the chunks are combined pairwise in a tree.
  """
  data = np.frombuffer(data, np.uint8)
  count = len(data) >> _CHUNK_BITS
  main = count << _CHUNK_BITS
  columns = np.ascontiguousarray(data[:main].reshape(count, _CHUNK).T)
  state = np.zeros(count, np.uint32)
  mask = np.uint32(0xFF)
  eight = np.uint32(8)
  for row in columns:
    state = _TABLE_NP[(state ^ row) & mask] ^ (state >> eight)
  # Leading zero chunks leave raw(0, .) unchanged: pad to a power of two.
  size = 1 << (count - 1).bit_length()
  state = np.concatenate([np.zeros(size - count, np.uint32), state])
  k = _CHUNK_BITS
  while len(state) > 1:
    state = _apply_vector(_zeros_operator(k), state[0::2]) ^ state[1::2]
    k += 1
  crc = _feed_zeros(crc, main) ^ int(state[0])
  return _update_bytes(crc, data[main:].tobytes())


def crc32c(data):
  """CRC-32C (Castagnoli) of bytes-like `data`, as TFRecord files use it."""
  if _google_crc32c is not None:
    return _google_crc32c.value(bytes(data))
  if len(data) >= _VECTOR_MIN:
    return _update_vector(0xFFFFFFFF, data) ^ 0xFFFFFFFF
  return _update_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def masked_crc32c(data):
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class CorruptShard(UserError):
  """A TFRecord file is truncated or its framing is damaged."""


def count_records(path, compression="none", verify_data=False):
  """Number of records in a TFRecord file; raises CorruptShard if damaged.

  Args:
    path: the file.
    compression: "none" or "gzip".
    verify_data: also check each record's data CRC (a CRC over every
      payload: about 200 MB/s, where the framing walk checks 8 bytes a
      record). The error then names the first record whose payload changed.
  """
  if not os.path.isfile(path):
    raise CorruptShard(f"TFRecord shard {path} does not exist")
  opener = gzip.open if compression == "gzip" else open
  count = 0
  try:
    with opener(path, "rb") as f:
      while True:
        header = f.read(12)
        if not header:
          return count
        if len(header) < 12:
          raise CorruptShard(f"TFRecord shard {path} is truncated inside the "
                             f"header of record {count}")
        length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
        if masked_crc32c(length_bytes) != length_crc:
          raise CorruptShard(f"TFRecord shard {path} is corrupt: bad length "
                             f"checksum in record {count}")
        (length,) = struct.unpack("<Q", length_bytes)
        body = f.read(length + 4)
        if len(body) < length + 4:
          raise CorruptShard(f"TFRecord shard {path} is truncated inside "
                             f"record {count}")
        if verify_data:
          (data_crc,) = struct.unpack("<I", body[length:])
          if masked_crc32c(memoryview(body)[:length]) != data_crc:
            raise CorruptShard(f"TFRecord shard {path} is corrupt: record "
                               f"{count} fails its checksum")
        count += 1
  except (OSError, EOFError, zlib.error) as e:
    raise CorruptShard(f"TFRecord shard {path} cannot be read ({e})")
