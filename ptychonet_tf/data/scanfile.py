"""The scan file: one ptychographic scan in an .npz file (see docs/scan_format.md).

Keys:
  amplitudes    float32 [N, h, w]  diffraction amplitudes sqrt(I), zero
                                   frequency at (h//2, w//2) (detector view)
  layout        int32   [N, 4]     (top, bottom, left, right) per position
  probe         complex64 [h, w]   the illumination
  object_shape  int32   [2]        (H, W)
  object        complex64 [H, W]   ground truth, when known (simulations)

Every reader of scans (this module's `load_scan`, `readers.read_tike`,
`readers.read_cxi`) passes its arrays through the same checks before it
builds a `Scan`: `real_array` / `complex_array` (numeric, no strings, no
silent loss of an imaginary part, finite), `layout_array` (integers that fit
int32), `limits.check_object_shape` (two positive ints the solvers can hold)
and `Scan.validate` (shapes that fit together, amplitudes >= 0 and not all
zero, windows inside the object).
"""
import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import layouts

INT32_MAX = np.iinfo(np.int32).max


def _numeric(value, what):
  array = np.asarray(value)
  if array.dtype.kind not in "biufc":
    raise UserError(f"{what} has dtype {array.dtype}; expected numbers")
  return array


def real_array(value, what, finite=True):
  """float32 copy of a real numeric array; raises UserError for strings,
  complex values (their imaginary part would be lost) or, with `finite`,
  NaN or infinite values (naming the first pattern of a stack)."""
  array = _numeric(value, what)
  if array.dtype.kind == "c":
    raise UserError(f"{what} has dtype {array.dtype}; expected real numbers "
                    f"(complex values are not amplitudes)")
  with np.errstate(over="ignore", invalid="ignore"):
    array = array.astype(np.float32)
  if finite:
    check_finite(array, what)
  return array


def complex_array(value, what):
  """complex64 copy of a numeric array; UserError for strings, NaN, inf."""
  with np.errstate(over="ignore", invalid="ignore"):
    array = _numeric(value, what).astype(np.complex64)
  check_finite(array, what)
  return array


def check_finite(array, what):
  """Raises UserError naming the first non-finite entry (or pattern)."""
  finite = np.isfinite(array)
  if not finite.all():
    if array.ndim == 3:
      bad = int(np.flatnonzero(~finite.all(axis=(1, 2)))[0])
      raise UserError(f"{what} hold NaN or infinite values (first in "
                      f"pattern {bad})")
    raise UserError(f"{what} holds NaN or infinite values (or values "
                    f"too large for float32)")


def layout_array(value, what):
  """int32 copy of a layout [N, 4] of whole numbers in int32's range."""
  array = _numeric(value, what)
  if array.ndim != 2 or array.shape[-1:] != (4,) or len(array) == 0:
    raise UserError(f"{what} has shape {array.shape}; expected [N, 4] (top, "
                    f"bottom, left, right) with N >= 1")
  if array.dtype.kind == "c":
    raise UserError(f"{what} has dtype {array.dtype}; expected integers")
  if array.dtype.kind == "f" and not (np.all(np.isfinite(array)) and
                                      np.all(array == np.round(array))):
    raise UserError(f"{what} holds values that are not whole numbers")
  if np.any(np.abs(array.astype(np.float64)) > INT32_MAX):
    raise UserError(f"{what} holds values beyond {INT32_MAX} (int32)")
  return array.astype(np.int32)


@dataclasses.dataclass
class Scan:
  amplitudes: np.ndarray
  layout: np.ndarray
  probe: np.ndarray
  object_shape: Tuple[int, int]
  object: Optional[np.ndarray] = None

  def validate(self, name="scan"):
    """Raises UserError naming the first inconsistency."""
    a = self.amplitudes
    if a.ndim != 3 or min(a.shape) < 1:
      raise UserError(f"{name}: amplitudes have shape {a.shape}; expected [N, h, w]")
    if a.dtype.kind not in "biuf":
      raise UserError(f"{name}: amplitudes have dtype {a.dtype}; expected real "
                      f"numbers")
    if self.probe.ndim != 2 or tuple(self.probe.shape) != tuple(a.shape[1:]):
      raise UserError(f"{name}: probe has shape {self.probe.shape}; expected "
                      f"{tuple(a.shape[1:])} to match the amplitudes [N, h, w]")
    if self.layout.shape != (a.shape[0], 4):
      raise UserError(f"{name}: layout has shape {self.layout.shape}; expected "
                      f"({a.shape[0]}, 4) for {a.shape[0]} patterns")
    if not np.all(np.isfinite(a)):
      bad = int(np.flatnonzero(~np.isfinite(a).all(axis=(1, 2)))[0])
      raise UserError(f"{name}: amplitudes hold NaN or infinite values "
                      f"(first in pattern {bad})")
    if np.any(a < 0):
      bad = int(np.flatnonzero((a < 0).any(axis=(1, 2)))[0])
      raise UserError(f"{name}: amplitudes hold negative values (first in "
                      f"pattern {bad}); expected sqrt(intensity) >= 0")
    if not np.any(a):
      raise UserError(f"{name}: amplitudes are all zero; a scan needs measured "
                      f"diffraction (no reconstruction can fit zero data)")
    self.object_shape = limits.check_object_shape(self.object_shape, name)
    layouts.check_layout(self.layout, self.object_shape, self.probe.shape,
                         name=f"{name}: layout")
    if self.object is not None and tuple(self.object.shape) != tuple(
        self.object_shape):
      raise UserError(f"{name}: object has shape {self.object.shape}; expected "
                      f"object_shape {tuple(self.object_shape)}")
    return self

  def save(self, path):
    """Validates, then writes to `path` atomically (temp name, then rename)."""
    self.validate(name=path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
      raise UserError(f"output path {path} is a directory; expected a .npz file name")
    if not os.path.isdir(parent):
      raise UserError(f"output folder {parent} does not exist")
    arrays = dict(amplitudes=self.amplitudes.astype(np.float32),
                  layout=self.layout.astype(np.int32),
                  probe=self.probe.astype(np.complex64),
                  object_shape=np.asarray(self.object_shape, np.int32))
    if self.object is not None:
      arrays["object"] = self.object.astype(np.complex64)
    files.save_npz(path, **arrays)


def load_scan(path):
  """Reads and validates a scan .npz file."""
  if not os.path.isfile(path):
    raise UserError(f"scan file {path} does not exist")
  with files.load_arrays(path, f"scan file {path}") as f:
    missing = [k for k in ("amplitudes", "layout", "probe") if k not in f]
    if missing:
      raise UserError(f"scan file {path} lacks {missing}; expected keys "
                      f"amplitudes, layout, probe (see docs/scan_format.md)")
    arrays = {k: f[k] for k in ("amplitudes", "layout", "probe", "object",
                                "object_shape") if k in f}
  amplitudes = real_array(arrays["amplitudes"], f"{path}: amplitudes")
  layout = layout_array(arrays["layout"], f"{path}: layout")
  probe = complex_array(arrays["probe"], f"{path}: probe")
  obj = arrays.get("object")
  if "object_shape" in arrays:
    object_shape = limits.check_object_shape(arrays["object_shape"], path)
  elif obj is not None:
    object_shape = limits.check_object_shape(np.asarray(obj).shape, path)
  else:
    object_shape = limits.check_object_shape(layouts.covering_shape(layout),
                                             f"{path} (the layout's extent)")
  if obj is not None:
    if np.asarray(obj).shape != tuple(object_shape):
      raise UserError(f"{path}: object has shape {np.asarray(obj).shape}; "
                      f"expected object_shape {tuple(object_shape)}")
    obj = complex_array(obj, f"{path}: object")
  scan = Scan(amplitudes=amplitudes, layout=layout, probe=probe,
              object_shape=object_shape, object=obj)
  return scan.validate(name=path)
