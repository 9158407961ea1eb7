"""Checks the framing of TFRecord files without TensorFlow.

A TFRecord file is a sequence of records: uint64 length, uint32 masked
CRC-32C of the length, `length` data bytes, uint32 masked CRC-32C of the data.
`count_records` walks the headers (and verifies each length CRC), so a
truncated or garbled shard is found in milliseconds and named, before a
training job trips over it.
"""
import gzip
import os
import struct
import zlib

from ptychonet_tf.utils.errors import UserError


def _crc32c_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data):
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class CorruptShard(UserError):
  """A TFRecord file is truncated or its framing is damaged."""


def count_records(path, compression="none"):
  """Number of records in a TFRecord file; raises CorruptShard if damaged.

  Args:
    path: the file.
    compression: "none" or "gzip".
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
        count += 1
  except (OSError, EOFError, zlib.error) as e:
    raise CorruptShard(f"TFRecord shard {path} cannot be read ({e})")
