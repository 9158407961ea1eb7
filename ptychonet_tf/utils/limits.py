"""Limits on what a file or a flag may make this process allocate.

Sizes that come from outside (an array shape in a file header, a pattern
count in a CXI file, an object size implied by scan positions, an image's
pixel count, a flag) are checked here before anything is allocated, against
the memory this process can still use, so that a 22 KB file that declares a
terabyte ends in one line instead of a MemoryError, a kernel kill or an hour
of swapping:

  check_allocation(shape, dtype, what)   the one memory check of every reader
  check_object_shape(shape, what)        an object [H, W] the solvers can hold
  check_image_pixels(height, width, what)  an image before it is decoded
  check_count(value, what, low, high)    an integer flag or header field

`available_memory()` is the smaller of the machine's available memory
(/proc/meminfo MemAvailable) and the room left under the process's
address-space limit (`ulimit -v`, `prlimit --as`); the environment variable
PTYCHONET_MEMORY_LIMIT (bytes, e.g. 2e9) lowers it further.
"""
import math
import os
import resource

import numpy as np

from ptychonet_tf.utils.errors import UserError

MEMORY_ENV = "PTYCHONET_MEMORY_LIMIT"
# An image larger than this is refused before it is decoded: objects are a
# few hundred pixels a side, and PIL's own limit (about 179 Mpixel) lets a
# 12000x12000 PNG through (minutes and gigabytes to resize it).
MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpixel, e.g. 8192 x 8192
# The largest object the simulators and solvers make (complex64; the
# solvers hold several copies of it).
MAX_OBJECT_PIXELS = 1 << 26
OBJECT_COPIES = 8  # object-sized arrays a solver holds at once
# The memory share a single request may take of what is available.
SHARE = 0.5


def _meminfo_available():
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _address_space_left():
  soft, _ = resource.getrlimit(resource.RLIMIT_AS)
  if soft == resource.RLIM_INFINITY:
    return None
  try:
    with open("/proc/self/statm", encoding="ascii") as f:
      used = int(f.read().split()[0]) * resource.getpagesize()
  except (OSError, ValueError, IndexError):
    used = 0
  return max(0, soft - used)


def available_memory():
  """Bytes this process can still allocate (see the module docstring)."""
  candidates = [v for v in (_meminfo_available(), _address_space_left())
                if v is not None]
  override = os.environ.get(MEMORY_ENV)
  if override:
    try:
      candidates.append(int(float(override)))
    except ValueError:
      raise UserError(f"environment variable {MEMORY_ENV}={override!r} is not "
                      f"a number of bytes") from None
  return min(candidates) if candidates else 1 << 40


def format_bytes(count):
  """1536 -> "1.5 KiB"."""
  value = float(count)
  for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
    if value < 1024 or unit == "PiB":
      return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
    value /= 1024
  return f"{value:.1f} EiB"


def format_shape(shape):
  """(3, 4) -> "3x4"; () -> "a scalar"."""
  return "x".join(str(int(s)) for s in shape) if len(shape) else "a scalar"


def nbytes(shape, itemsize):
  """prod(shape) * itemsize as a Python int (no int64 overflow)."""
  return math.prod(int(s) for s in shape) * int(itemsize)


def check_allocation(shape, dtype, what, copies=1):
  """Raises UserError unless `copies` arrays of `shape` and `dtype` fit.

  Args:
    shape: the declared shape (ints >= 0).
    dtype: numpy dtype (or its itemsize in bytes, an int).
    what: names the file and array or the flag, e.g. "scan file a.cxi:
      entry_1/data_1/data".
    copies: arrays of this size the reader makes from it (conversions).

  Returns:
    The bytes of one array.
  """
  shape = tuple(shape)
  if any(int(s) < 0 for s in shape):
    raise UserError(f"{what} declares the shape {shape}; expected sizes >= 0")
  itemsize = dtype if isinstance(dtype, int) else np.dtype(dtype).itemsize
  size = nbytes(shape, itemsize)
  limit = int(available_memory() * SHARE)
  if size * copies > limit:
    kind = "" if isinstance(dtype, int) else f" {np.dtype(dtype).name}"
    raise UserError(f"{what} is {format_shape(shape)}{kind} "
                    f"({format_bytes(size)}); more than this process can hold "
                    f"({format_bytes(limit)} of memory for it)")
  return size


def check_object_shape(shape, what):
  """Raises UserError unless `shape` is (H, W) of positive ints that the
  solvers can hold (MAX_OBJECT_PIXELS and the memory of OBJECT_COPIES
  complex64 copies). Returns (H, W) as ints."""
  values = np.asarray(shape)
  if values.ndim != 1 or values.size != 2 or not (
      np.issubdtype(values.dtype, np.integer) or
      (np.issubdtype(values.dtype, np.floating) and
       np.all(np.isfinite(values)) and np.all(values == np.round(values)))):
    raise UserError(f"{what}: object_shape is {_short(shape)}; expected two "
                    f"positive integers (H, W)")
  height, width = (int(v) for v in values)
  if height < 1 or width < 1:
    raise UserError(f"{what}: object_shape is ({height}, {width}); expected "
                    f"two positive integers (H, W)")
  if height * width > MAX_OBJECT_PIXELS:
    raise UserError(f"{what}: the object is {height}x{width} pixels "
                    f"({height * width / 1e6:.0f} Mpixel); at most "
                    f"{MAX_OBJECT_PIXELS / 1e6:.0f} Mpixel are supported")
  check_allocation((height, width), np.complex64, f"{what}: the object",
                   copies=OBJECT_COPIES)
  return height, width


def check_image_pixels(height, width, what):
  """Raises UserError for an image over MAX_IMAGE_PIXELS or the memory of
  a float32 copy of it (called with the header's size, before decoding)."""
  pixels = int(height) * int(width)
  if pixels > MAX_IMAGE_PIXELS:
    raise UserError(f"{what} is {width}x{height} pixels "
                    f"({pixels / 1e6:.0f} Mpixel); at most "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpixel are read (objects are "
                    f"small: scale the image down first)")
  check_allocation((height, width, 4), np.float32, what, copies=2)


def check_count(value, what, low, high):
  """Raises UserError unless low <= value <= high (ints); returns int(value)."""
  if not low <= value <= high:
    raise UserError(f"{what}={value} must be in [{low}, {high}]")
  return int(value)


def _short(value):
  text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
  return text if len(text) <= 60 else text[:57] + "..."


# The largest mean photon count per pattern a simulation draws Poisson noise
# for (numpy's Poisson sampler stops near 1e19; float32 amplitudes resolve
# far less): larger values are refused, inf means noise free.
MAX_PHOTONS = 1e15


def check_photons(doses, what="--photons"):
  """Raises UserError for a dose (photons per pattern) that is not 0 (noise
  free), inf (noise free) or a finite number in (0, MAX_PHOTONS]."""
  for dose in doses:
    dose = float(dose)
    if math.isnan(dose) or dose < 0 or (
        not math.isinf(dose) and dose > MAX_PHOTONS):
      raise UserError(f"{what} value {dose:g} must be in [0, {MAX_PHOTONS:g}] "
                      f"photons per pattern (0 or inf = noise free)")
  return doses
