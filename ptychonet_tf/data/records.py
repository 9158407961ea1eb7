"""Checks TFRecord files without TensorFlow: framing, and on request checksums.

A TFRecord file is a sequence of records: uint64 length, uint32 masked
CRC-32C of the length, `length` data bytes, uint32 masked CRC-32C of the data.
`count_records` walks the headers (and verifies each length CRC), so a
truncated or garbled shard is found in milliseconds and named, before a
training job trips over it. With `verify_data=True` it also checks each
record's data CRC, so a flipped byte inside a payload (framing intact) is
named by shard and record index; the CRC-32C comes from `google_crc32c`
(its C implementation: several GB/s).
"""
import gzip
import os
import struct
import zlib

import google_crc32c

from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError

# A record longer than this is refused as corrupt before it is read: one
# scan of the largest geometry the writer makes is far smaller, and a length
# field that passes its CRC by chance (or was forged) must not make the
# checker allocate it.
MAX_RECORD_BYTES = 1 << 31


def crc32c(data):
  """CRC-32C (Castagnoli) of bytes-like `data`, as TFRecord files use it."""
  return google_crc32c.value(bytes(data))


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
    verify_data: also check each record's data CRC (reads every payload,
      where the framing walk reads 12 bytes a record). The error then names
      the first record whose payload changed.
  """
  if not os.path.isfile(path):
    raise CorruptShard(f"TFRecord shard {path} does not exist")
  opener = gzip.open if compression == "gzip" else open
  count = 0
  size = os.path.getsize(path)
  limit = min(MAX_RECORD_BYTES,
              int(limits.available_memory() * limits.SHARE))
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
        if compression != "gzip" and length + 4 > size - f.tell():
          raise CorruptShard(f"TFRecord shard {path} is truncated inside "
                             f"record {count} (its length field says "
                             f"{length} bytes, {size - f.tell()} are left)")
        if length > limit:
          raise CorruptShard(f"TFRecord shard {path} is corrupt: record "
                             f"{count} says it is {limits.format_bytes(length)}"
                             f" long (at most {limits.format_bytes(limit)} "
                             f"are read)")
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
  except (OSError, EOFError, zlib.error, MemoryError) as e:
    raise CorruptShard(f"TFRecord shard {path} cannot be read ({e})")
