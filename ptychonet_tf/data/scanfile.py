"""The scan file: one ptychographic scan in an .npz file (see docs/scan_format.md).

Keys:
  amplitudes    float32 [N, h, w]  diffraction amplitudes sqrt(I), zero
                                   frequency at (h//2, w//2) (detector view)
  layout        int32   [N, 4]     (top, bottom, left, right) per position
  probe         complex64 [h, w]   the illumination
  object_shape  int32   [2]        (H, W)
  object        complex64 [H, W]   ground truth, when known (simulations)
"""
import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import layouts


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
    if a.ndim != 3:
      raise UserError(f"{name}: amplitudes have shape {a.shape}; expected [N, h, w]")
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
  try:
    with files.load_arrays(path, f"scan file {path}") as f:
      missing = [k for k in ("amplitudes", "layout", "probe") if k not in f]
      if missing:
        raise UserError(f"scan file {path} lacks {missing}; expected keys "
                        f"amplitudes, layout, probe (see docs/scan_format.md)")
      arrays = {k: f[k] for k in f.keys()}
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"scan file {path} is not a readable .npz file ({e})")
  obj = arrays.get("object")
  if "object_shape" in arrays:
    object_shape = tuple(int(s) for s in arrays["object_shape"])
  elif obj is not None:
    object_shape = tuple(obj.shape)
  else:
    object_shape = layouts.covering_shape(arrays["layout"])
  scan = Scan(amplitudes=arrays["amplitudes"].astype(np.float32),
              layout=arrays["layout"].astype(np.int32),
              probe=arrays["probe"].astype(np.complex64),
              object_shape=object_shape,
              object=None if obj is None else obj.astype(np.complex64))
  return scan.validate(name=path)
