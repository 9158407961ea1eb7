"""The probe windows of a scan: the extract <-> stitch pair and coverage.

This is the package's one implementation of the window operator; the forward
model, the simulator, DM, ePIE, the `StitchPatches` layer, the pipelines and
the metrics all go through `Windows`.

A layout int32 [N, 4] holds rows (top, bottom, left, right) of N windows of
the probe size (h, w) inside an (H, W) object (see `physics.layouts`). Every
window pixel maps to the raveled object index row * W + col; that index,
int32 [N, h, w], is computed once per layout.

- `extract` gathers the windows: [..., H, W] -> [..., N, h, w].
- `stitch` is its exact adjoint: it sums the windows back into an
  [..., H, W] canvas, so that <extract(x), y> = <x, stitch(y)> for the
  inner product sum(conj(a) * b) over all elements, real or complex.
- `coverage` is stitch of one per-pixel weight map [h, w] repeated over the N
  windows, as float64 numpy: how many windows (or how much weight) cover each
  object pixel.
- `normalized_stitch` is the weighted mean of the windows covering each pixel,
  stitch(y * w) / coverage(w), 0 where coverage(w) is 0.
- `window` and `add_to_window` are the same pair for one window j (a
  tensor, e.g. inside a compiled loop): a dynamic slice and a dynamic
  update slice, which XLA does in place; ePIE visits positions with them.

`Windows.of_corners` builds the same operator for a scan known only inside
a graph (a SavedModel's `any_scan` signature: positions and object size are
tensors): its index is a tensor, and `extract` and `stitch` (methods
"scatter" and "segment") work as above; the numpy views (`coverage`,
`gather_table`, ...) need a concrete layout.
"""
import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from ptychonet_tf.physics import layouts

# Implementations of `Windows.stitch`; all give the same sums.
STITCH_METHODS = ("scatter", "segment", "gather", "slices")


def probe_shape_of(layout):
  """(h, w) of the windows of a layout, read from its first row.

  Args:
    layout: int [N, 4] (top, bottom, left, right), N >= 1.
  """
  top, bottom, left, right = np.asarray(layout)[0]
  return int(bottom - top), int(right - left)


def scan_frame(positions, probe_shape):
  """The windows and object of scan positions, inside a graph.

  `layouts.layout_from_positions` (margin 0) for a tensor: positions are
  rounded to whole pixels (half to even, as numpy) after shifting the
  smallest to 0, so the object just covers the scan.

  Args:
    positions: float [N, 2] (y, x) probe positions in pixels, any origin,
      fractional allowed.
    probe_shape: (h, w).

  Returns:
    (corners int32 [N, 2] the windows' (top, left), object_shape int32 [2]).
  """
  positions = tf.cast(positions, tf.float64)
  corners = tf.cast(tf.round(positions - tf.reduce_min(positions, axis=0)),
                    tf.int32)
  return corners, tf.reduce_max(corners, axis=0) + tf.constant(
      [int(s) for s in probe_shape], tf.int32)


def captured(array):
  """An eager tensor of a numpy table, made outside any graph being traced
  (`tf.init_scope`): every graph that uses it captures the one tensor,
  where a numpy array would become a new constant at every use (each
  unrolled refinement step held its own copies of the window tables:
  139 MB of graph for 40 steps)."""
  with tf.init_scope():
    return tf.constant(array)


class Windows:
  """The N probe windows of one layout in one object: extract, stitch, coverage.

  The layout is checked once (`layouts.check_layout`: every window has the
  probe's size and lies inside the object) and its flat index is computed
  once, so build one `Windows` per geometry and reuse it.

  Args:
    layout: int [N, 4] rows (top, bottom, left, right); numpy, a list or an
      eager tensor (a concrete value, not a symbolic one).
    object_shape: (H, W).
    probe_shape: (h, w), the window size.

  Attributes:
    layout: int32 numpy [N, 4].
    object_shape, probe_shape: (H, W) and (h, w) as ints.
    count: N.
    size: H * W.
    index: int32 numpy [N, h, w], the raveled object index row * W + col of
      every window pixel.
    corners: int32 numpy [N, 2], the (top, left) of every window.
  """

  symbolic = False  # `of_corners`: a layout known only inside a graph

  def __init__(self, layout, object_shape, probe_shape):
    if tf.is_tensor(layout):
      value = tf.get_static_value(layout)
      if value is None:
        raise ValueError(f"Windows needs a concrete layout (numpy or an eager "
                         f"tensor), got the symbolic tensor {layout}")
      layout = value
    layout = np.asarray(layout)
    self.object_shape = tuple(int(s) for s in object_shape)
    self.probe_shape = tuple(int(s) for s in probe_shape)
    layouts.check_layout(layout, self.object_shape, self.probe_shape)
    self.layout = layout.astype(np.int32)
    self.count = len(self.layout)
    self.size = self.object_shape[0] * self.object_shape[1]
    self.index = layouts.window_index(self.layout, self.object_shape)
    self._index_tensor = None
    self.corners = self.layout[:, [0, 2]].copy()
    self._segment_ids = {}
    self._table = None
    self._inverse = {}

  @classmethod
  def of_corners(cls, corners, object_shape, probe_shape):
    """The windows of a scan given as tensors (inside a graph).

    Args:
      corners: int32 [N, 2] tensor, the (top, left) of every window, each
        window inside the object (not checked: the caller derives the object
        from the corners).
      object_shape: int32 [2] tensor (H, W).
      probe_shape: (h, w), static.

    Returns:
      A `Windows` whose `index` [N, h, w], `count`, `size` and
      `object_shape` are tensors; `extract` and `stitch` ("scatter",
      "segment") take objects and patches of any H, W and N.
    """
    self = cls.__new__(cls)
    corners = tf.cast(corners, tf.int32)
    object_shape = tf.cast(object_shape, tf.int32)
    self.symbolic = True
    self.probe_shape = tuple(int(s) for s in probe_shape)
    self.object_shape = object_shape
    self.count = tf.shape(corners)[0]
    self.size = object_shape[0] * object_shape[1]
    h, w = self.probe_shape
    rows = corners[:, 0:1] + tf.range(h)[None, :]
    cols = corners[:, 1:2] + tf.range(w)[None, :]
    self.index = rows[:, :, None] * object_shape[1] + cols[:, None, :]
    self.corners = corners
    self.layout = None
    self._segment_ids, self._table, self._inverse = {}, None, {}
    return self

  @classmethod
  def from_layout(cls, layout, object_shape):
    """A `Windows` whose probe shape is read from the layout's first row."""
    return cls(layout, object_shape, probe_shape_of(layout))

  def extract(self, obj):
    """Gathers the windows of objects.

    Args:
      obj: [..., H, W], any dtype (real or complex).

    Returns:
      [..., N, h, w], the same dtype: window j is obj[..., t:b, l:r] for
      layout row j = (t, b, l, r).
    """
    obj = tf.convert_to_tensor(obj)
    if not self.symbolic:
      self._check_trailing(obj.shape, 2, self.object_shape, "objects")
    flat = tf.reshape(obj, tf.concat([tf.shape(obj)[:-2], [self.size]], 0))
    return tf.gather(flat, self.index_tensor(), axis=-1)

  def index_tensor(self):
    """`index` as one int32 tensor, made eagerly once (`captured`)."""
    if self.symbolic:
      return self.index
    if self._index_tensor is None:
      self._index_tensor = captured(self.index)
    return self._index_tensor

  def _origin(self, obj, j):
    """The start [0, .., 0, top_j, left_j] of window j in obj [..., H, W]."""
    corner = tf.gather(tf.constant(self.corners), j)
    return tf.concat([tf.zeros([obj.shape.rank - 2], tf.int32), corner], 0)

  def window(self, obj, j):
    """Window j of objects: one slice of `extract`.

    Args:
      obj: [..., H, W] with a static rank, any dtype.
      j: int32 scalar (a tensor or int), the window's layout row.

    Returns:
      [..., h, w]: obj[..., t:b, l:r] (a dynamic slice).
    """
    obj = tf.convert_to_tensor(obj)
    lead = obj.shape[:-2]
    # A batch axis of unknown size (a SavedModel signature's None) takes its
    # size from the tensor; XLA sees it as a constant when it compiles.
    size = (lead + self.probe_shape if lead.is_fully_defined() else
            tf.concat([tf.shape(obj)[:-2], self.probe_shape], 0))
    return xla.dynamic_slice(obj, self._origin(obj, j), size)

  def add_to_window(self, obj, j, update):
    """obj with `update` added to window j: one window's term of `stitch`.

    Args:
      obj: [..., H, W] with a static rank.
      j: int32 scalar, the window's layout row.
      update: [..., h, w], the dtype of obj.

    Returns:
      [..., H, W]: a dynamic update slice, done in place under XLA.
    """
    obj = tf.convert_to_tensor(obj)
    origin = self._origin(obj, j)
    return xla.dynamic_update_slice(obj, self.window(obj, j) + update, origin)

  def stitch(self, patches, method="scatter", channels=0):
    """Sums windows into object canvases: the exact adjoint of `extract`.

    <extract(x), y> = <x, stitch(y)> for every x [..., H, W] and y
    [..., N, h, w] (tests/test_windows.py checks it for every method and for
    every user's variant).

    Args:
      patches: [..., N, h, w, *C], real or complex; the last `channels` axes
        are channels, carried along (each channel stitched on its own).
      method: "scatter" (one tf.tensor_scatter_nd_add whose slices are the
        flattened batch and channels), "segment" (one
        tf.math.unsorted_segment_sum; several times faster on CPU for a
        static batch) or "gather" (every object pixel gathers its covering
        window pixels through a precomputed [H*W, K] table and sums them;
        K is the largest overlap count) or "slices" (N dynamic-update-slice
        additions, one window after another, in a while loop: under XLA each
        is done in place, faster than XLA:CPU's serial scatter (DM's
        iterations, docs/baselines.md); without XLA every addition copies
        the canvas). All give the same sums.
      channels: number of trailing channel axes (0 or more).

    Returns:
      [..., H, W, *C], the dtype of `patches`: at each pixel the sum of the
      window pixels covering it, 0 where no window does.
    """
    patches = tf.convert_to_tensor(patches)
    rank = patches.shape.rank
    if self.symbolic:
      self._check_trailing(patches.shape[:rank - channels], 2,
                           self.probe_shape, "patches")
      if method not in ("scatter", "segment"):
        method = "segment"  # the others need a concrete layout
    else:
      self._check_trailing(patches.shape[:rank - channels], 3,
                           (self.count,) + self.probe_shape, "patches")
    channel_shape = tuple(int(c) for c in patches.shape[rank - channels:])
    c = int(np.prod(channel_shape, dtype=np.int64))
    batch_shape = tf.shape(patches)[:rank - 3 - channels]
    pixels = tf.size(self.index) if self.symbolic else self.index.size
    if method == "scatter":
      # [B, N*h*w, C] -> [N*h*w, B*C]: the batch and channels ride along as
      # the slice of one scatter, whatever B is.
      x = tf.reshape(patches, [-1, pixels, c])
      batch = tf.shape(x)[0]
      x = tf.reshape(tf.transpose(x, [1, 0, 2]), [pixels, batch * c])
      canvas = tf.zeros([self.size, batch * c], patches.dtype)
      canvas = tf.tensor_scatter_nd_add(
          canvas, tf.reshape(self.index_tensor(), [-1, 1]), x)
      canvas = tf.transpose(tf.reshape(canvas, [self.size, batch, c]),
                            [1, 0, 2])
    elif method == "segment":
      # [B*N*h*w, *C] summed into [B*H*W, *C] by ids offset per scan.
      batch = patches.shape[:rank - 3 - channels].num_elements()
      if batch is None or self.symbolic:
        batch = tf.reduce_prod(batch_shape)
      canvas = tf.math.unsorted_segment_sum(
          tf.reshape(patches, (-1,) + channel_shape), self._segments(batch),
          batch * self.size)
    elif method == "gather":
      x = tf.reshape(patches, [-1, pixels, c])
      x = tf.pad(x, [[0, 0], [0, 1], [0, 0]])  # index N*h*w reads 0
      canvas = tf.reduce_sum(tf.gather(x, captured(self.gather_table()),
                                       axis=1), axis=2)
    elif method == "slices":
      canvas = self._stitch_slices(patches, channels)
    else:
      raise ValueError(f"stitch method {method!r} is not one of "
                       f"{STITCH_METHODS}")
    return tf.reshape(canvas, tf.concat(
        [batch_shape, tf.cast(self.object_shape, tf.int32),
         tf.constant(channel_shape, tf.int32, [len(channel_shape)])], 0))

  def _stitch_slices(self, patches, channels):
    """`stitch` as N in-place window additions ([..., H, W, *C])."""
    rank = patches.shape.rank
    lead = list(range(rank - 3 - channels))
    window_axes = [rank - 3 - channels, rank - 2 - channels, rank - 1 - channels]
    channel_axes = list(range(rank - channels, rank))
    # Channels go before the window axis, so each addition is [..., *C, h, w].
    canvas = self._add_windows(
        tf.transpose(patches, lead + channel_axes + window_axes))
    if not channels:
      return canvas
    k = len(lead)
    return tf.transpose(canvas, lead + [k + channels, k + channels + 1] +
                        list(range(k, k + channels)))

  @tf.custom_gradient
  def _add_windows(self, x):
    """[..., N, h, w] -> [..., H, W]: window j added at its place, j = 0..N-1.

    The gradient is `extract` (the sum's adjoint): XLA's dynamic update
    slice has none of its own.
    """
    shape = tf.concat([tf.shape(x)[:-3], self.object_shape], 0)
    canvas = tf.ensure_shape(tf.zeros(shape, x.dtype),
                             x.shape[:-3] + self.object_shape)

    def add(j, canvas):
      return j + 1, self.add_to_window(canvas, j, tf.gather(x, j, axis=-3))

    canvas = tf.while_loop(lambda j, _: j < self.count, add,
                           (tf.constant(0), canvas))[1]
    return canvas, self.extract

  def coverage(self, weights=None):
    """How many windows, or how much window weight, covers each object pixel.

    Args:
      weights: None (every window pixel counts 1) or float [h, w], the
        per-pixel weight of a window, the same for every window.

    Returns:
      float64 numpy [H, W]: sum over the windows covering each pixel of their
      weight there (0 where none does); `stitch` of the weights repeated over
      the N windows.
    """
    return layouts.coverage(self.index, self.object_shape, weights)

  def inverse_coverage(self, weights=None):
    """float64 numpy [H, W]: 1 / coverage(weights), 0 where the coverage is 0.

    Cached per weight map.
    """
    key = None if weights is None else np.asarray(weights, np.float64).tobytes()
    if key not in self._inverse:
      total = self.coverage(weights)
      self._inverse[key] = np.where(total > 0,
                                    1.0 / np.where(total > 0, total, 1.0), 0.0)
    return self._inverse[key]

  def normalized_stitch(self, patches, weights=None, method="scatter",
                        channels=0):
    """The weighted mean of the windows covering each pixel.

    stitch(patches * w) / coverage(w), 0 where coverage(w) is 0; with
    weights None (w = 1) the plain mean, the paper's Algorithm 1.

    Args:
      patches: [..., N, h, w, *C] float (or complex).
      weights: None or float [h, w] non-negative window weights.
      method, channels: as `stitch`.

    Returns:
      [..., H, W, *C], the dtype of `patches`.
    """
    patches = tf.convert_to_tensor(patches)
    trailing = [1] * channels
    if self.symbolic:
      # Weights may be a tensor (of a probe given at run time); the coverage
      # is a stitch of them.
      w = tf.ones(self.probe_shape) if weights is None else weights
      w = tf.cast(w, patches.dtype)
      total = self.stitch(tf.broadcast_to(w, tf.concat(
          [[self.count], self.probe_shape], 0)), method)
      inverse = tf.math.divide_no_nan(tf.ones_like(total), total)
      if weights is not None:
        patches = patches * tf.reshape(w, list(self.probe_shape) + trailing)
      return (self.stitch(patches, method, channels) *
              tf.reshape(inverse, tf.concat([self.object_shape, trailing], 0)))
    # The constants are rounded to float32 (float64 for double patches)
    # once, then converted to the patches' dtype.
    real = np.float64 if patches.dtype.real_dtype == tf.float64 else np.float32
    if weights is not None:
      w = tf.constant(np.asarray(weights).astype(real), patches.dtype)
      patches = patches * tf.reshape(w, list(self.probe_shape) + trailing)
    inverse = tf.constant(self.inverse_coverage(weights).astype(real),
                          patches.dtype)
    return (self.stitch(patches, method, channels) *
            tf.reshape(inverse, list(self.object_shape) + trailing))

  def gather_table(self):
    """The inverse of `index` as a dense table (built on first use).

    Returns:
      int32 numpy [H*W, K], K the largest overlap count (at least 1): row p
      lists the indices into the raveled N*h*w window pixels that land on
      object pixel p, padded with N*h*w (which `stitch` reads as 0).
    """
    if self._table is None:
      index = self.index.ravel()
      counts = np.bincount(index, minlength=self.size)
      order = np.argsort(index, kind="stable")
      sorted_pixels = index[order]
      starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
      slot = np.arange(index.size) - starts[sorted_pixels]
      table = np.full((self.size, max(int(counts.max()), 1)), index.size,
                      np.int32)
      table[sorted_pixels, slot] = order
      self._table = table
    return self._table

  def _segments(self, batch):
    """int32 [B*N*h*w]: `index` offset by b*H*W for scan b of B."""
    if isinstance(batch, int):
      if batch not in self._segment_ids:
        offsets = np.arange(batch, dtype=np.int32)[:, None] * self.size
        self._segment_ids[batch] = captured(
            (offsets + self.index.reshape(1, -1)).ravel())
      return self._segment_ids[batch]
    offsets = tf.range(batch, dtype=tf.int32)[:, None] * self.size
    return tf.reshape(offsets + tf.reshape(self.index, [1, -1]), [-1])

  @staticmethod
  def _check_trailing(shape, axes, expected, name):
    got = tuple(shape[-axes:]) if shape.rank is not None else None
    if got is None or len(got) < axes or got != tuple(expected):
      raise ValueError(f"{name} of shape {shape} do not end in "
                       f"{list(expected)} as the windows expect")
