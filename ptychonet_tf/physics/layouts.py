"""Scan layouts: probe positions and the layout matrix M.

A layout matrix M is int32 [N, 4]; row j is (top, bottom, left, right) of the
j-th probe window in object pixels, bottom/right exclusive, so that the
illuminated patch is O[top:bottom, left:right] with bottom - top = h and
right - left = w for an h x w probe.

Position generators return float64 [N, 2] (y, x) centres in pixels, in scan
order; `layout_from_positions` turns them into M and the smallest object that
covers the scan.
"""
import os

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))
# The lit region: pixels whose summed illumination sum_j |P|^2 reaches this
# fraction of its maximum (`illuminated_region`); the data determine the
# object there. The package scores on it and applies its image prior on it.
REGION_FRACTION = 0.01


def fermat_spiral(count, step):
  """Fermat spiral: r_n = step * sqrt(n), theta_n = n * golden angle.

  Gives near-uniform coverage with no periodicity (no raster grid artefacts).

  Args:
    count: number of positions N.
    step: radial scale in pixels; the mean nearest-neighbour distance is about
      1.8 * step.

  Returns:
    float64 [N, 2] (y, x).
  """
  if count < 1 or step <= 0:
    raise UserError(f"fermat spiral needs count >= 1 and step > 0, got "
                    f"count={count}, step={step}")
  n = np.arange(count, dtype=np.float64)
  r = step * np.sqrt(n)
  theta = n * GOLDEN_ANGLE
  return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


def mesh(rows, cols, step, every=1):
  """Rectangular raster mesh, row-major, optionally keeping every k-th row/col.

  `mesh(20, 20, 17, every=4)` is the paper's sparse scan: a 20 x 20 mesh with a
  17 px step cut to its rows and columns 0, 4, 8, 12, 16, i.e. 5 x 5 = 25
  positions 68 px apart.

  Returns:
    float64 [N, 2] (y, x), N = ceil(rows/every) * ceil(cols/every).
  """
  if rows < 1 or cols < 1 or step <= 0 or every < 1:
    raise UserError(f"mesh needs rows, cols, every >= 1 and step > 0, got "
                    f"rows={rows}, cols={cols}, step={step}, every={every}")
  ii = np.arange(0, rows, every)
  jj = np.arange(0, cols, every)
  y, x = np.meshgrid(ii * step, jj * step, indexing="ij")
  return np.stack([y.ravel(), x.ravel()], axis=1).astype(np.float64)


def concentric_circles(rings, step):
  """Concentric circles: a centre point, then ring k (radius k*step) holds 6k points.

  Returns:
    float64 [N, 2] (y, x), N = 1 + 3 * rings * (rings + 1).
  """
  if rings < 0 or step <= 0:
    raise UserError(f"concentric circles need rings >= 0 and step > 0, got "
                    f"rings={rings}, step={step}")
  points = [np.zeros((1, 2))]
  for k in range(1, rings + 1):
    theta = 2.0 * np.pi * np.arange(6 * k) / (6 * k)
    points.append(k * step * np.stack([np.sin(theta), np.cos(theta)], axis=1))
  return np.concatenate(points, axis=0)


def layout_from_positions(positions, probe_shape, margin=0):
  """Converts (y, x) centres to a layout matrix and the covering object shape.

  Positions are rounded to whole pixels and shifted so that the scan starts
  `margin` pixels from the object's top-left corner.

  Args:
    positions: float [N, 2] (y, x) probe centres.
    probe_shape: (h, w).
    margin: pixels of unscanned border on every side.

  Returns:
    (layout int32 [N, 4], object_shape (H, W)).
  """
  positions = np.asarray(positions, np.float64)
  if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
    raise UserError(f"positions must be [N, 2] with N >= 1, got {positions.shape}")
  h, w = probe_shape
  corner = np.round(positions - positions.min(axis=0)).astype(np.int64) + margin
  top, left = corner[:, 0], corner[:, 1]
  layout = np.stack([top, top + h, left, left + w], axis=1).astype(np.int32)
  return layout, covering_shape(layout, margin)


def covering_shape(layout, margin=0):
  """(H, W): the smallest object that holds every window of `layout` [N, 4],
  plus `margin` pixels below and to the right."""
  return (int(layout[:, 1].max()) + margin, int(layout[:, 3].max()) + margin)


def check_layout(layout, object_shape, probe_shape, name="layout"):
  """Raises UserError unless every window has the probe's size and lies inside the object."""
  layout = np.asarray(layout)
  if layout.ndim != 2 or layout.shape[1] != 4 or len(layout) == 0:
    raise UserError(f"{name} has shape {layout.shape}; expected [N, 4] "
                    f"(top, bottom, left, right) with N >= 1")
  h, w = probe_shape
  big_h, big_w = object_shape
  top, bottom, left, right = layout.T
  bad_size = np.flatnonzero((bottom - top != h) | (right - left != w))
  if bad_size.size:
    j = int(bad_size[0])
    raise UserError(f"{name} row {j} {layout[j].tolist()} spans "
                    f"{bottom[j] - top[j]}x{right[j] - left[j]} pixels; expected "
                    f"the probe size {h}x{w}")
  outside = np.flatnonzero((top < 0) | (left < 0) | (bottom > big_h) |
                           (right > big_w))
  if outside.size:
    j = int(outside[0])
    raise UserError(f"{name} row {j} {layout[j].tolist()} falls outside the "
                    f"{big_h}x{big_w} object ({outside.size} of {len(layout)} "
                    f"rows do)")


def load_layout(path, probe_shape):
  """(layout int32 [N, 4], object_shape) from an .npz file holding `layout`
  (and `object_shape`, else the layout's extent): a dataset's geometry.npz or
  this project's scan file, e.g. of a measured scan (`tools/make_tfrecords.py
  --scans` writes the geometry.npz of tike and CXI scans).

  Raises UserError if the file is missing or unreadable, has no layout, or
  its windows are not probe_shape.
  """
  if not os.path.isfile(path):
    raise UserError(f"scan file {path} does not exist")
  try:
    with files.load_arrays(path, f"scan file {path}") as f:
      if "layout" not in f:
        raise UserError(f"scan file {path} holds no 'layout'; expected a "
                        f"dataset's geometry.npz or a scan .npz")
      layout = np.asarray(f["layout"], np.int32)
      shape = (tuple(int(s) for s in f["object_shape"])
               if "object_shape" in f else None)
  except (OSError, ValueError, KeyError, EOFError) as e:
    raise UserError(f"scan file {path} is not a readable .npz file ({e})")
  if shape is None and layout.ndim == 2 and layout.shape[1:] == (4,):
    shape = covering_shape(layout)
  check_layout(layout, shape or (0, 0), probe_shape,
               name=f"the layout of {path}")
  return layout, shape


def interleaved_groups(count, groups):
  """Indices of `groups` interleaved groups of `count` positions: group g is
  every groups-th position from the g-th, so each spreads over the whole
  scan (DM's position groups, the refinement steps' groups)."""
  return [np.arange(count)[g::groups] for g in range(groups)]


def window_index(layout, object_shape):
  """int32 numpy [N, h, w]: the raveled object index row * W + col of every
  window pixel (the window size read from the layout's first row).

  Args:
    layout: int [N, 4], windows of equal size inside the object (see
      `check_layout`).
    object_shape: (H, W).
  """
  layout = np.asarray(layout, np.int32)
  top, bottom, left, right = (int(v) for v in layout[0])
  rows = layout[:, 0:1] + np.arange(bottom - top, dtype=np.int32)[None, :]
  cols = layout[:, 2:3] + np.arange(right - left, dtype=np.int32)[None, :]
  return rows[:, :, None] * int(object_shape[1]) + cols[:, None, :]


def coverage(index, object_shape, weights=None):
  """float64 numpy [H, W]: the window weight covering each object pixel.

  Args:
    index: int [N, h, w] from `window_index`.
    object_shape: (H, W).
    weights: None (every window pixel counts 1) or float [h, w], the weight of
      a window pixel, the same in every window (e.g. |P|^2).

  Returns:
    At each pixel the sum of the weights of the window pixels on it (0 where
    no window is).
  """
  index = np.asarray(index)
  weights = np.ones(index.shape[1:]) if weights is None else weights
  weights = np.asarray(weights, np.float64)
  if weights.shape != index.shape[1:]:
    raise ValueError(f"pixel weights of shape {weights.shape} do not match "
                     f"the {index.shape[1]}x{index.shape[2]} windows")
  size = int(object_shape[0]) * int(object_shape[1])
  total = np.bincount(index.ravel(),
                      np.broadcast_to(weights, index.shape).ravel(),
                      minlength=size)
  return total.reshape(tuple(int(s) for s in object_shape))


def illuminated_region(layout, object_shape, probe, fraction=REGION_FRACTION):
  """bool [H, W]: pixels whose total illumination sum_j |P|^2 reaches `fraction` of its maximum.

  Where a probe is (nearly) zero, e.g. the corners of a window around a
  pinhole probe, the data say nothing about the object; this region leaves
  such pixels out.

  Args:
    layout: int [N, 4].
    object_shape: (H, W).
    probe: complex [h, w].
    fraction: threshold relative to the maximum, in (0, 1].
  """
  probe = np.asarray(probe)
  check_layout(layout, object_shape, probe.shape)
  total = coverage(window_index(layout, object_shape), object_shape,
                   np.abs(probe) ** 2)
  return total >= fraction * total.max()


def scanned_mask(layout, object_shape):
  """bool numpy [H, W]: True where at least one probe window covers the pixel.

  Args:
    layout: int [N, 4], windows of equal size inside the object.
    object_shape: (H, W).
  """
  return coverage(window_index(layout, object_shape), object_shape) > 0


def overlap_fraction(layout):
  """Mean linear overlap between each window and its nearest neighbour (0..1).

  Computed from the window size and the nearest-neighbour centre distance:
  1 - d / h for the probe height h. A value of 0.6 means neighbouring windows
  share about 60% of their width.
  """
  layout = np.asarray(layout, np.float64)
  if len(layout) < 2:
    return 0.0
  centres = np.stack([layout[:, 0] + layout[:, 1], layout[:, 2] + layout[:, 3]],
                     axis=1) / 2.0
  d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
  np.fill_diagonal(d, np.inf)
  size = float(layout[0, 1] - layout[0, 0])
  return float(np.clip(1.0 - d.min(axis=1) / size, 0.0, 1.0).mean())
