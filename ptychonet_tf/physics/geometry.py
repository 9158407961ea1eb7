"""Scan geometry: the probe, the layout matrix and the object shape, built from a config."""
import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib

SCAN_PATTERNS = ("fermat", "mesh", "circles", "file")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """A simulated probe (kind, diameter) or one loaded from `file`."""
  size: Tuple[int, int] = (64, 64)
  kind: str = "zone_plate"
  diameter: float = 0.5
  file: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ScanConfig:
  """Scan positions. Which fields matter depends on `pattern`:

  fermat: count, step; mesh: rows, cols, step, every; circles: rings, step;
  file: the layout and object size of `file` (a dataset's geometry.npz or a
  scan .npz, e.g. of a measured scan), as they are.
  """
  pattern: str = "fermat"
  count: int = 100
  step: float = 4.65
  rows: int = 10
  cols: int = 10
  every: int = 1
  rings: int = 5
  margin: int = 0
  file: Optional[str] = None

  def positions(self):
    if self.pattern == "fermat":
      return layouts.fermat_spiral(self.count, self.step)
    if self.pattern == "mesh":
      return layouts.mesh(self.rows, self.cols, self.step, self.every)
    if self.pattern == "circles":
      return layouts.concentric_circles(self.rings, self.step)
    if self.pattern == "file":
      raise UserError("scan pattern 'file' has no generated positions; use "
                      "ScanConfig.layout")
    raise UserError(f"unknown scan pattern {self.pattern!r}; expected one of "
                    f"{SCAN_PATTERNS}")

  def layout(self, probe_shape):
    """(layout int32 [N, 4], object_shape) for windows of probe_shape: the
    positions, placed with `margin`, or the file's layout as it is."""
    if self.pattern == "file":
      if not self.file:
        raise UserError("--scan=file needs --scan_file (a dataset's "
                        "geometry.npz or a scan .npz)")
      return layouts.load_layout(self.file, probe_shape)
    return layouts.layout_from_positions(self.positions(), probe_shape,
                                         margin=self.margin)


@dataclasses.dataclass(frozen=True)
class GeometryConfig:
  probe: ProbeConfig = ProbeConfig()
  scan: ScanConfig = ScanConfig()


@dataclasses.dataclass(frozen=True)
class Geometry:
  """A fixed scan geometry shared by every scan of a dataset.

  Attributes:
    probe: complex64 [h, w].
    layout: int32 [N, 4] (top, bottom, left, right).
    object_shape: (H, W).
  """
  probe: np.ndarray
  layout: np.ndarray
  object_shape: Tuple[int, int]

  def __post_init__(self):
    layouts.check_layout(self.layout, self.object_shape, self.probe.shape)

  @property
  def probe_shape(self):
    return tuple(int(s) for s in self.probe.shape)

  @property
  def num_positions(self):
    return int(self.layout.shape[0])

  def save(self, path):
    """Writes probe, layout and object_shape to an .npz file (atomically)."""
    files.save_npz(path, probe=self.probe, layout=self.layout,
                   object_shape=np.asarray(self.object_shape, np.int32))

  @classmethod
  def load(cls, path):
    if not os.path.isfile(path):
      raise UserError(f"geometry file {path} does not exist")
    try:
      with files.load_arrays(path, f"geometry file {path}") as f:
        return cls(probe=f["probe"].astype(np.complex64),
                   layout=f["layout"].astype(np.int32),
                   object_shape=tuple(int(s) for s in f["object_shape"]))
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f"geometry file {path} is unreadable or incomplete ({e})")


def make_geometry(config):
  """Builds the Geometry for a GeometryConfig; the object just covers the scan."""
  size = tuple(int(s) for s in config.probe.size)
  if config.probe.file:
    probe = probe_lib.load_probe(config.probe.file, expected_shape=size)
  else:
    probe = probe_lib.make_probe(size, config.probe.kind, config.probe.diameter)
  layout, object_shape = config.scan.layout(size)
  return Geometry(probe=probe, layout=layout, object_shape=object_shape)
