"""PtychoNet layers and network: shapes, serialization, stitching against numpy."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import layers
from ptychonet_tf.model import network
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib

PROBE = (16, 16)


@pytest.fixture(scope="module")
def geometry():
  return geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=PROBE),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))


@pytest.fixture(scope="module")
def sparse_geometry():
  # 2x2 mesh 12 px apart: pixels covered by 0, 1 and 2 windows.
  return geometry_lib.make_geometry(geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=PROBE),
      scan=geometry_lib.ScanConfig(pattern="mesh", rows=2, cols=2, step=12,
                                   margin=3)))


def numpy_stitch(patches, layout, object_shape):
  """Algorithm 1 with loops: sums and counts, divided by max(count, 1)."""
  batch = patches.shape[0]
  total = np.zeros((batch, *object_shape) + patches.shape[4:], np.float64)
  count = np.zeros(object_shape, np.float64)
  for j, (t, b, l, r) in enumerate(layout):
    total[:, t:b, l:r] += patches[:, j]
    count[t:b, l:r] += 1
  count = np.maximum(count, 1).reshape(object_shape + (1,) * (patches.ndim - 4))
  return total / count


@pytest.mark.parametrize("method", layers.STITCH_METHODS)
@pytest.mark.parametrize("channels", [(), (2,)])
def test_stitch_matches_numpy(geometry, sparse_geometry, method, channels):
  rng = np.random.default_rng(0)
  for geo in (geometry, sparse_geometry):
    n = geo.num_positions
    patches = rng.normal(size=(3, n, *PROBE) + channels).astype(np.float32)
    layer = layers.StitchPatches(geo.layout, geo.object_shape, method=method)
    got = layer(patches).numpy()
    assert got.shape == (3, *geo.object_shape) + channels
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_stitch(patches, geo.layout,
                                                 geo.object_shape),
                               rtol=1e-5, atol=1e-5)


def test_stitch_constant_patches_give_the_constant(sparse_geometry):
  geo = sparse_geometry
  layer = layers.StitchPatches(geo.layout, geo.object_shape)
  out = layer(np.full((2, geo.num_positions, *PROBE), 0.7, np.float32)).numpy()
  covered = forward.overlap_count(geo.layout, geo.object_shape, PROBE).numpy()
  assert covered.max() >= 2 and covered.min() == 0  # the test is not trivial
  np.testing.assert_allclose(out[:, covered > 0], 0.7, rtol=1e-6)
  assert np.all(out[:, covered == 0] == 0)


def test_stitch_is_the_normalised_adjoint_of_extract(geometry):
  """StitchPatches(y) * count == forward.stitch(y), and <extract x, y> = <x, stitch y>."""
  rng = np.random.default_rng(1)
  geo = geometry
  y = rng.normal(size=(2, geo.num_positions, *PROBE)).astype(np.float32)
  x = rng.normal(size=(2, *geo.object_shape)).astype(np.float32)
  count = forward.overlap_count(geo.layout, geo.object_shape, PROBE).numpy()
  stitched = layers.StitchPatches(geo.layout, geo.object_shape)(y).numpy()
  summed = forward.stitch(y, geo.layout, geo.object_shape).numpy()
  np.testing.assert_allclose(stitched * np.maximum(count, 1), summed,
                             rtol=1e-5, atol=1e-5)
  lhs = np.sum(forward.extract(x, geo.layout, PROBE).numpy() * y)
  np.testing.assert_allclose(lhs, np.sum(x * summed), rtol=1e-4)


def test_stitch_gradient_and_output_shape(geometry):
  layer = layers.StitchPatches(geometry.layout, geometry.object_shape)
  x = tf.Variable(tf.ones([2, geometry.num_positions, *PROBE]))
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(layer(x))
  grad = tape.gradient(y, x).numpy()
  # d(sum of averages)/d patch pixel = 1 / count of its object pixel.
  count = forward.overlap_count(geometry.layout, geometry.object_shape,
                                PROBE).numpy()
  expected = forward.extract(1.0 / np.maximum(count, 1), geometry.layout,
                             PROBE).numpy()
  np.testing.assert_allclose(grad[0], expected, rtol=1e-6)
  assert layer.compute_output_shape((None, 10, 16, 16)) == (
      None, *geometry.object_shape)
  assert layer.compute_output_shape((None, 10, 16, 16, 2)) == (
      None, *geometry.object_shape, 2)
  with pytest.raises(ValueError, match="expects patches"):
    layer(tf.ones([1, 9, *PROBE]))


def test_stitch_get_config_round_trip(geometry):
  layer = layers.StitchPatches(geometry.layout, geometry.object_shape,
                               method="gather", name="s")
  config = layer.get_config()
  clone = layers.StitchPatches.from_config(config)
  assert clone.get_config() == config
  assert clone.method == "gather" and clone.object_shape == geometry.object_shape
  x = np.random.default_rng(2).normal(
      size=(1, geometry.num_positions, *PROBE)).astype(np.float32)
  np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
  # Registered: deserializable by name.
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert isinstance(restored, layers.StitchPatches)


def numpy_weighted_stitch(patches, layout, object_shape, weights):
  """sum w * patch / sum w over the covering windows, 0 where none covers."""
  total = np.zeros((patches.shape[0], *object_shape), np.float64)
  norm = np.zeros(object_shape, np.float64)
  for j, (t, b, l, r) in enumerate(layout):
    total[:, t:b, l:r] += weights * patches[:, j]
    norm[t:b, l:r] += weights
  return np.where(norm > 0, total / np.where(norm > 0, norm, 1), 0)


@pytest.mark.parametrize("method", layers.STITCH_METHODS)
def test_weighted_stitch_matches_numpy(sparse_geometry, method):
  geo = sparse_geometry
  rng = np.random.default_rng(4)
  weights = layers.stitch_weights(geo.probe, "probe")
  assert weights.shape == PROBE and weights.min() >= layers.PROBE_WEIGHT_FLOOR
  assert weights.max() == pytest.approx(1 + layers.PROBE_WEIGHT_FLOOR)
  patches = rng.normal(size=(2, geo.num_positions, *PROBE)).astype(np.float32)
  layer = layers.StitchPatches(geo.layout, geo.object_shape, method=method,
                               pixel_weights=weights)
  expected = numpy_weighted_stitch(patches, geo.layout, geo.object_shape,
                                   weights)
  np.testing.assert_allclose(layer(patches).numpy(), expected, rtol=1e-4,
                             atol=1e-5)
  # Constant patches still give the constant wherever a window covers.
  out = layer(np.full((1, geo.num_positions, *PROBE), 0.7, np.float32)).numpy()
  covered = forward.overlap_count(geo.layout, geo.object_shape, PROBE).numpy()
  np.testing.assert_allclose(out[:, covered > 0], 0.7, rtol=1e-5)
  assert np.all(out[:, covered == 0] == 0)
  # Uniform weights are the paper's Algorithm 1.
  uniform = layers.StitchPatches(
      geo.layout, geo.object_shape, method=method,
      pixel_weights=layers.stitch_weights(geo.probe, "uniform"))
  np.testing.assert_allclose(
      uniform(patches).numpy(),
      numpy_stitch(patches, geo.layout, geo.object_shape), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="weighting"):
    layers.stitch_weights(geo.probe, "gaussian")
  with pytest.raises(ValueError, match="non-negative"):
    layers.StitchPatches(geo.layout, geo.object_shape,
                         pixel_weights=-np.ones(PROBE))


def test_probe_weighting_ignores_dark_corners(geometry):
  """Patches right under the probe and wrong in its dark corners: probe
  weighting recovers the object far better than the uniform average."""
  geo = geometry
  rng = np.random.default_rng(5)
  truth = rng.uniform(0.5, 1.0, (1, *geo.object_shape)).astype(np.float32)
  patches = forward.extract(truth, geo.layout, PROBE).numpy()
  weights = layers.stitch_weights(geo.probe, "probe")
  dark = weights < 0.01
  assert 0.2 < dark.mean() < 0.9  # the probe leaves dark corners
  patches[:, :, dark] = 0.0  # what a network cannot know
  covered = forward.overlap_count(geo.layout, geo.object_shape, PROBE).numpy()
  lit = layers.overlap_counts(geo.layout, geo.object_shape, PROBE,
                              (~dark).astype(np.float64)) > 0
  errors = {}
  for name in layers.STITCH_WEIGHTINGS:
    layer = layers.StitchPatches(geo.layout, geo.object_shape,
                                 pixel_weights=layers.stitch_weights(geo.probe,
                                                                     name))
    errors[name] = np.abs(layer(patches).numpy() - truth)[:, lit].mean()
  assert covered[lit].min() > 0
  assert errors["probe"] < errors["uniform"] / 3, errors


def test_weighted_model_config_round_trip(geometry):
  model = small_model(geometry)  # probe weighting by default
  assert model.stitch_weights is not None
  clone = network.PtychoNet.from_config(model.get_config())
  np.testing.assert_array_equal(clone.stitch_weights, model.stitch_weights)
  np.testing.assert_array_equal(clone.stitch.pixel_weights,
                                model.stitch.pixel_weights)
  assert clone.network_config.stitch_weighting == "probe"
  uniform = small_model(geometry, stitch_weighting="uniform")
  assert uniform.stitch_weights is None and uniform.stitch.pixel_weights is None
  with pytest.raises(UserError, match="stitch weighting"):
    small_model(geometry, stitch_weighting="flat")


def small_model(geometry, **kw):
  config = network.NetworkConfig(base_channels=4, depth=2, **kw)
  return network.build_model(config, geometry)


def test_network_shapes_and_ranges(geometry):
  model = small_model(geometry, amplitude_range=(0.5, 1.0),
                      phase_range=(-1.0, 0.0))
  x = np.random.default_rng(3).random(
      (2, geometry.num_positions, *PROBE)).astype(np.float32)
  out = model(x)
  assert set(out) == {"amplitude", "phase"}
  for v in out.values():
    assert v.shape == (2, *geometry.object_shape) and v.dtype == tf.float32
  patches = model.predict_patches(x)
  assert patches["amplitude"].shape == (2, geometry.num_positions, *PROBE)
  a, p = patches["amplitude"].numpy(), patches["phase"].numpy()
  assert a.min() >= 0.5 and a.max() <= 1.0 and p.min() >= -1.0 and p.max() <= 0
  # The encoder-decoder of the paper: 4x4 stride-2 convolutions.
  convs = [l for l in model.patch_network.layers
           if isinstance(l, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
  assert len(convs) == 4
  assert all(l.kernel_size == (4, 4) and l.strides == (2, 2) for l in convs)
  acts = [type(l).__name__ for l in model.patch_network.layers]
  assert acts.count("LeakyReLU") == 2 and acts.count("ReLU") == 1
  assert acts.count("BatchNormalization") == 3


def test_network_get_config_round_trip_and_keras_file(geometry, tmp_path):
  model = small_model(geometry)
  x = np.random.default_rng(4).random(
      (1, geometry.num_positions, *PROBE)).astype(np.float32)
  y = model(x)["phase"].numpy()
  clone = network.PtychoNet.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  np.testing.assert_array_equal(clone(x)["phase"].numpy(), y)
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x)["phase"].numpy(), y, rtol=1e-6)


def test_mixed_bfloat16_outputs_float32(geometry):
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    model = small_model(geometry)
  finally:
    keras.config.set_dtype_policy(previous)
  x = np.ones((1, geometry.num_positions, *PROBE), np.float32)
  out = model(x)
  assert out["amplitude"].dtype == tf.float32
  assert model.patch_network.layers[1].compute_dtype == "bfloat16"


def test_network_config_errors():
  with pytest.raises(UserError, match="divisible"):
    network.NetworkConfig(depth=5).validate((16, 16))
  with pytest.raises(UserError, match="depth"):
    network.NetworkConfig(depth=0).validate((16, 16))
  with pytest.raises(UserError, match="base_channels"):
    network.NetworkConfig(base_channels=0).validate((16, 16))
