"""The one window operator: every extract/stitch implementation passes one
dot-product test, and coverage and extract agree with numpy loops."""
import numpy as np
import pytest
import tensorflow as tf

from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import layers
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.physics import windows
from ptychonet_tf.utils.errors import UserError

PROBE = (10, 8)
BATCH = 2


@pytest.fixture(scope="module")
def ops():
  """6 windows of 10x8 on a Fermat spiral in a ~20x20 object with an
  unscanned 2 px border: pixels covered 0, 1 and several times."""
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(6, 3.0), PROBE, margin=2)
  return windows.Windows(layout, shape, PROBE)


def random(rng, shape, dtype):
  x = rng.normal(size=shape)
  if np.issubdtype(dtype, np.complexfloating):
    x = x + 1j * rng.normal(size=shape)
  return x.astype(dtype)


# --- The implementations: (extract, stitch, dtype, relative tolerance) ------
# extract: [B, H, W] -> [B, N, h, w]; stitch: [B, N, h, w] -> [B, H, W].


def windows_variant(method):
  return lambda w: (w.extract, lambda y: w.stitch(y, method), np.complex128,
                    1e-12)


def channels_variant(method):
  """The batch axis carried as a trailing channel axis of `stitch`."""
  def make(w):
    def stitch(y):
      return np.moveaxis(w.stitch(np.moveaxis(y, 0, -1), method, channels=1),
                         -1, 0)
    return w.extract, stitch, np.complex128, 1e-12
  return make


def forward_variant(w):
  return (lambda x: forward.extract(x, w.layout, w.probe_shape),
          lambda y: forward.stitch(y, w.layout, w.object_shape),
          np.complex128, 1e-12)


def layer_variant(method):
  """StitchPatches (real, float64) times the coverage: its un-normalised sum."""
  def make(w):
    layer = layers.StitchPatches(w.layout, w.object_shape, method=method,
                                 dtype="float64")
    return (w.extract, lambda y: layer(y).numpy() * w.coverage(), np.float64,
            1e-12)
  return make


def operator_variant(w):
  """The ptychography operator's object solution (DM's overlap projection,
  LSQML's and the refinement's directions) with P = 1, no inertia, norm 1:
  its stitch of psi."""
  ones = tf.ones(w.object_shape, tf.float32)
  op = operator_lib.Ptychography(w.layout, w.object_shape, w.probe_shape)
  return (op.views,
          lambda y: op.solve_object(y, np.ones(PROBE, np.complex64), 0.0,
                                    norm=ones),
          np.complex64, 1e-5)


def epie_variant(w):
  """ePIE's one-window reads and adds (`Windows.window` / `add_to_window`),
  position by position inside one compiled loop, as ePIE runs them: the
  adds are the "slices" stitch under XLA."""
  stitch_compiled = tf.function(lambda y: w.stitch(y, method="slices"),
                                jit_compile=True)

  def extract(x):
    return np.stack([w.window(x, j) for j in range(w.count)], axis=1)

  return extract, lambda y: stitch_compiled(tf.constant(y)).numpy(), \
      np.complex128, 1e-12


VARIANTS = {
    **{f"windows-{m}": windows_variant(m) for m in windows.STITCH_METHODS},
    **{f"channels-{m}": channels_variant(m) for m in windows.STITCH_METHODS},
    "forward": forward_variant,
    **{f"layer-{m}": layer_variant(m) for m in layers.STITCH_METHODS},
    "dm": operator_variant,
    "epie": epie_variant,
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_stitch_is_the_adjoint_of_extract(ops, name):
  """<extract(x), y> = <x, stitch(y)>, to `tol` of ||extract(x)|| ||y||."""
  extract, stitch, dtype, tol = VARIANTS[name](ops)
  rng = np.random.default_rng(0)
  x = random(rng, (BATCH,) + ops.object_shape, dtype)
  y = random(rng, (BATCH, ops.count) + PROBE, dtype)
  ex = np.asarray(extract(x))
  sy = np.asarray(stitch(y))
  assert ex.shape == y.shape and sy.shape == x.shape
  lhs = np.vdot(ex.astype(np.complex128), y)
  rhs = np.vdot(x.astype(np.complex128), sy)
  scale = np.linalg.norm(ex) * np.linalg.norm(y)
  assert abs(lhs - rhs) <= tol * scale, (lhs, rhs)
  # Not trivially 0 = 0, and extract really gathers: it is the plain slicing.
  assert abs(lhs) > 1e-3 * scale / np.sqrt(y.size)
  for j, (t, b, l, r) in enumerate(ops.layout):
    np.testing.assert_allclose(ex[:, j], x[:, t:b, l:r], rtol=tol)


def numpy_coverage(layout, shape, weights):
  total = np.zeros(shape)
  for t, b, l, r in layout:
    total[t:b, l:r] += weights
  return total


def test_coverage_and_stitch_match_numpy_loops(ops):
  rng = np.random.default_rng(1)
  count = numpy_coverage(ops.layout, ops.object_shape, 1.0)
  assert count.min() == 0 and count.max() >= 3  # the case is not trivial
  np.testing.assert_array_equal(ops.coverage(), count)
  weights = rng.uniform(0, 1, PROBE)
  np.testing.assert_allclose(
      ops.coverage(weights),
      numpy_coverage(ops.layout, ops.object_shape, weights), rtol=1e-12)
  np.testing.assert_array_equal(
      layouts.scanned_mask(ops.layout, ops.object_shape), count > 0)
  np.testing.assert_array_equal(
      forward.overlap_count(ops.layout, ops.object_shape, PROBE).numpy(),
      count)
  probe = random(rng, PROBE, np.complex128)
  power = numpy_coverage(ops.layout, ops.object_shape, np.abs(probe) ** 2)
  np.testing.assert_array_equal(
      metrics.illuminated_region(ops.layout, ops.object_shape, probe, 0.3),
      power >= 0.3 * power.max())
  patches = random(rng, (ops.count,) + PROBE, np.float32)
  summed = np.zeros(ops.object_shape, np.float32)
  for patch, (t, b, l, r) in zip(patches, ops.layout):
    summed[t:b, l:r] += patch
  for method in windows.STITCH_METHODS:
    np.testing.assert_allclose(ops.stitch(patches, method).numpy(), summed,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", layers.STITCH_METHODS)
def test_stitch_layer_is_the_normalized_stitch(ops, method):
  """StitchPatches = stitch(y * w) / coverage(w), 0 where nothing covers."""
  rng = np.random.default_rng(2)
  y = random(rng, (BATCH, ops.count) + PROBE + (2,), np.float32)
  for weights in (None, rng.uniform(0.1, 1, PROBE).astype(np.float32)):
    layer = layers.StitchPatches(ops.layout, ops.object_shape, method=method,
                                 pixel_weights=weights)
    got = layer(y).numpy()
    want = ops.normalized_stitch(y, weights, method, channels=1).numpy()
    np.testing.assert_array_equal(got, want)
    w = np.ones(PROBE, np.float32) if weights is None else weights
    total = ops.stitch(y * w[:, :, None], channels=1).numpy()
    cover = ops.coverage(w)[..., None]
    np.testing.assert_allclose(got * cover, total, rtol=1e-5, atol=1e-5)
    assert np.all(got[:, cover[..., 0] == 0] == 0)


def test_bad_inputs(ops):
  with pytest.raises(UserError, match="falls outside"):
    windows.Windows(ops.layout + 5, ops.object_shape, PROBE)
  with pytest.raises(UserError, match="expected the probe size"):
    windows.Windows(ops.layout, ops.object_shape, (4, 4))
  with pytest.raises(ValueError, match="do not match"):
    ops.coverage(np.ones((3, 3)))
  with pytest.raises(ValueError, match="not one of"):
    ops.stitch(np.zeros((ops.count,) + PROBE), "loop")
  with pytest.raises(ValueError, match="do not end in"):
    ops.stitch(np.zeros((ops.count + 1,) + PROBE))
  with pytest.raises(ValueError, match="concrete layout"):
    tf.function(lambda m: windows.Windows(m, ops.object_shape, PROBE).index)(
        tf.constant(ops.layout))


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("jit", [False, True])
def test_slices_stitch_has_the_gradient_of_the_others(ops, dtype, jit):
  """XLA's dynamic update slice has no gradient: "slices" brings its own
  (extract, the adjoint), equal to the segment sum's, channels included."""
  rng = np.random.default_rng(1)
  y = tf.constant(random(rng, (BATCH, ops.count) + PROBE + (2,), dtype))
  weights = tf.constant(random(rng, (BATCH,) + ops.object_shape + (2,), dtype))
  grads = []
  for method in ("segment", "slices"):
    @tf.function(jit_compile=jit)
    def loss(y, method=method):
      out = ops.stitch(y, method=method, channels=1)
      return tf.reduce_sum(tf.abs(out * weights) ** 2)
    with tf.GradientTape() as tape:
      tape.watch(y)
      value = loss(y)
    grads.append(tape.gradient(value, y).numpy())
  np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-4)
  assert np.abs(grads[0]).max() > 0.1


def test_slices_stitch_and_window_take_an_unknown_batch(ops):
  """A SavedModel signature's batch axis is None: the slice sizes come from
  the tensor then (a refined model's export failed on this)."""
  spec = tf.TensorSpec([None, ops.count, *PROBE], tf.float32)

  @tf.function(input_signature=[spec], jit_compile=True)
  def both(y):
    canvas = ops.stitch(y, method="slices")
    return canvas, ops.window(canvas, 1)

  y = random(np.random.default_rng(3), (BATCH, ops.count) + PROBE, np.float32)
  canvas, window = both(tf.constant(y))
  np.testing.assert_allclose(canvas, ops.stitch(y, method="segment"),
                             rtol=1e-5, atol=1e-5)
  t, b, l, r = ops.layout[1]
  np.testing.assert_array_equal(window, canvas.numpy()[:, t:b, l:r])


def test_windows_of_corners_in_a_graph_are_the_layouts(ops):
  """Windows.of_corners (a layout known only inside a graph) extracts and
  stitches as the layout's Windows; scan_frame places positions as
  layouts.layout_from_positions does."""
  rng = np.random.default_rng(5)
  obj = random(rng, (BATCH,) + ops.object_shape, np.complex64)
  patches = random(rng, (BATCH, ops.count) + PROBE + (2,), np.float32)

  @tf.function(input_signature=[
      tf.TensorSpec([None, 2], tf.int32), tf.TensorSpec([2], tf.int32),
      tf.TensorSpec([None, None, None], tf.complex64),
      tf.TensorSpec([None, None] + list(PROBE) + [2], tf.float32)])
  def run(corners, object_shape, obj, patches):
    symbolic = windows.Windows.of_corners(corners, object_shape, PROBE)
    weights = tf.constant(np.linspace(0.1, 1, np.prod(PROBE)).reshape(PROBE),
                          tf.float32)
    return (symbolic.extract(obj),
            symbolic.stitch(patches, "scatter", channels=1),
            symbolic.normalized_stitch(patches, weights, channels=1))

  weights = np.linspace(0.1, 1, np.prod(PROBE)).reshape(PROBE)
  got = run(ops.corners, np.asarray(ops.object_shape, np.int32), obj, patches)
  np.testing.assert_allclose(got[0], ops.extract(obj), atol=1e-6)
  np.testing.assert_allclose(got[1], ops.stitch(patches, channels=1),
                             atol=1e-5)
  np.testing.assert_allclose(
      got[2], ops.normalized_stitch(patches, weights, channels=1), atol=1e-5)
  positions = layouts.fermat_spiral(6, 3.3) + 100.25
  corners, shape = windows.scan_frame(tf.constant(positions), PROBE)
  layout, want = layouts.layout_from_positions(positions, PROBE)
  np.testing.assert_array_equal(corners.numpy(), layout[:, [0, 2]])
  assert tuple(shape.numpy()) == want
