"""PtychoNet layers and network: shapes, serialization, stitching against numpy."""
from absl import flags
import keras
import numpy as np
import pytest
import tensorflow as tf

from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.training import run_dir
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import export
from ptychonet_tf.model import layers
from ptychonet_tf.model import network
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.physics import windows

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
  lit = windows.Windows(geo.layout, geo.object_shape, PROBE).coverage(
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
  with pytest.raises(UserError, match="stitch_weighting .flat. is not one of"):
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


def encoder_decoder_dtypes(model, x):
  """{layer name: compute dtype} and {layer name: output dtype} of the
  encoder-decoder of `model` on amplitudes `x`."""
  net = model.patch_network
  named = [l for l in net.layers if not isinstance(l, keras.layers.InputLayer)]
  taps = keras.Model(net.input, [l.output for l in named])
  h, w = model.probe_shape
  outputs = taps(np.log1p(x.reshape(-1, h, w, 1) / model.input_scale))
  return ({l.name: l.compute_dtype for l in named},
          {l.name: y.dtype.name for l, y in zip(named, outputs)})


def test_mixed_bfloat16_outputs_float32(geometry):
  """mixed_precision is the model's own: bfloat16 inside the encoder-decoder,
  float32 variables, inputs, stitching and outputs, the global policy unchanged."""
  assert keras.config.dtype_policy().name == "float32"
  model = small_model(geometry, mixed_precision=True)
  assert keras.config.dtype_policy().name == "float32"
  assert model.compute_policy == "mixed_bfloat16"
  assert model.network_config.mixed_precision
  assert model.get_config()["compute_policy"] == "mixed_bfloat16"
  x = np.random.default_rng(6).random(
      (2, geometry.num_positions, *PROBE)).astype(np.float32)
  out = model(x)
  assert keras.config.dtype_policy().name == "float32"
  assert {v.dtype for v in out.values()} == {tf.float32}
  assert model.predict_patches(x)["phase"].dtype == tf.float32
  assert model.dtype_policy.name == "float32"
  assert model.stitch.compute_dtype == "float32"
  computes, outputs = encoder_decoder_dtypes(model, x)
  assert computes.pop("out") == "float32" and outputs.pop("out") == "float32"
  assert len(computes) == 10  # depth 2: enc0, enc1, dec1 (conv, BN, act), out_conv
  assert set(computes.values()) == {"bfloat16"}, computes
  assert set(outputs.values()) == {"bfloat16"}, outputs
  assert {v.dtype for v in model.variables} == {"float32"}


def test_float32_model_ignores_a_mixed_global_policy(geometry):
  """The policy is fixed per model: a global policy set elsewhere changes nothing."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    model = small_model(geometry)
    x = np.ones((1, geometry.num_positions, *PROBE), np.float32)
    computes, outputs = encoder_decoder_dtypes(model, x)
    out = model(x)
  finally:
    keras.config.set_dtype_policy(previous)
  assert model.compute_policy == "float32"
  assert set(computes.values()) == {"float32"}, computes
  assert set(outputs.values()) == {"float32"}, outputs
  assert {v.dtype for v in out.values()} == {tf.float32}


def test_float32_copy_of_a_mixed_model_and_checkpoints(geometry, tmp_path):
  """float32_copy computes in float32 with the same weights and outputs (to
  bfloat16 tolerance); checkpoints of either policy load into the other."""
  mixed = small_model(geometry, mixed_precision=True)
  x = np.random.default_rng(7).random(
      (2, geometry.num_positions, *PROBE)).astype(np.float32)
  y_mixed = {k: v.numpy() for k, v in mixed(x).items()}
  copy = export.float32_copy(mixed)
  assert keras.config.dtype_policy().name == "float32"
  assert copy.compute_policy == "float32" and not copy.network_config.mixed_precision
  assert mixed.compute_policy == "mixed_bfloat16"  # the original is unchanged
  computes, outputs = encoder_decoder_dtypes(copy, x)
  assert set(computes.values()) == {"float32"}, computes
  assert set(outputs.values()) == {"float32"}, outputs
  y_copy = {k: v.numpy() for k, v in copy(x).items()}
  for k in ("amplitude", "phase"):
    assert y_copy[k].dtype == np.float32
    # bfloat16 keeps 8 significant bits (eps 2**-8 ~ 0.004); the ranges span
    # about 1, and these random weights differ by ~3e-4.
    np.testing.assert_allclose(y_copy[k], y_mixed[k], rtol=0, atol=4e-3)
    assert not np.array_equal(y_copy[k], y_mixed[k])  # really computed apart
  # The variables are float32 in both policies: checkpoints are interchangeable.
  path = tf.train.Checkpoint(model=mixed).write(str(tmp_path / "mixed"))
  plain = small_model(geometry)
  plain(x)
  status = tf.train.Checkpoint(model=plain).read(path)
  status.assert_existing_objects_matched()
  for a, b in zip(plain.get_weights(), mixed.get_weights()):
    np.testing.assert_array_equal(a, b)
  path = tf.train.Checkpoint(model=plain).write(str(tmp_path / "plain"))
  again = small_model(geometry, mixed_precision=True)
  again(x)
  tf.train.Checkpoint(model=again).read(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(again(x)["phase"].numpy(), y_mixed["phase"])
  # Older model.json files have no compute_policy: they load as float32.
  config = mixed.get_config()
  del config["compute_policy"]
  assert network.PtychoNet.from_config(config).compute_policy == "float32"
  with pytest.raises(UserError, match="compute policy"):
    network.PtychoNet.from_config(dict(config, compute_policy="float16"))


def test_network_config_errors():
  with pytest.raises(UserError, match="divisible"):
    network.NetworkConfig(depth=5).validate((16, 16))
  with pytest.raises(UserError, match="depth"):
    network.NetworkConfig(depth=0).validate((16, 16))
  with pytest.raises(UserError, match="base_channels"):
    network.NetworkConfig(base_channels=0).validate((16, 16))


@pytest.mark.parametrize("architecture", network.ARCHITECTURES)
def test_every_architecture_maps_patterns_to_two_sigmoid_channels(architecture):
  config = network.NetworkConfig(base_channels=4, depth=2,
                                 architecture=architecture)
  model = network.build_patch_network(config, PROBE)
  x = np.random.default_rng(0).normal(size=(3, *PROBE, 1)).astype(np.float32)
  y = model(x, training=False).numpy()
  assert y.shape == (3, *PROBE, 2)
  assert np.all((y > 0) & (y < 1))
  names = {layer.name for layer in model.layers}
  # The paper's layer names stay (checkpoints of older runs load).
  paper = {"enc0_conv", "enc1_bn", "dec1_conv", "out_conv", "out"}
  if architecture == "two_decoders":
    assert {"amplitude_dec1_conv", "phase_out_conv", "out"} <= names
  else:
    assert paper <= names
  assert any("_res_" in n for n in names) == (architecture == "residual")


def test_two_decoders_keep_amplitude_and_phase_apart():
  """Changing the phase decoder's weights leaves the amplitude channel."""
  config = network.NetworkConfig(base_channels=4, depth=2,
                                 architecture="two_decoders")
  model = network.build_patch_network(config, PROBE)
  x = np.random.default_rng(1).normal(size=(2, *PROBE, 1)).astype(np.float32)
  before = model(x, training=False).numpy()
  layer = model.get_layer("phase_out_conv")
  layer.set_weights([w + 0.5 for w in layer.get_weights()])
  after = model(x, training=False).numpy()
  np.testing.assert_array_equal(after[..., 0], before[..., 0])
  assert np.abs(after[..., 1] - before[..., 1]).max() > 1e-3


def test_residual_blocks_add_weights_to_the_paper_network():
  counts = {a: network.build_patch_network(
      network.NetworkConfig(base_channels=4, depth=2, architecture=a),
      PROBE).count_params() for a in ("paper", "residual")}
  assert counts["residual"] > counts["paper"]


def test_pattern_input_norm_standardises_each_pattern(geometry):
  """input_norm="pattern": the network sees zero-mean, unit-variance
  patterns; it round-trips through the model's config."""
  seen = {}
  for norm in network.INPUT_NORMS:
    model = network.build_model(network.NetworkConfig(
        base_channels=4, depth=2, input_norm=norm), geometry)
    calls = []
    original = model.patch_network
    model.patch_network = lambda x, training=False, calls=calls, f=original: (
        calls.append(x.numpy()) or f(x, training=training))
    amps = np.random.default_rng(2).uniform(
        0, 3, (1, geometry.num_positions, *PROBE)).astype(np.float32)
    model.patch_tensor(amps)
    seen[norm] = calls[0]
    assert model.get_config()["input_norm"] == norm
    assert network.PtychoNet.from_config(model.get_config()).input_norm == norm
  x = seen["pattern"]
  np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
  np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
  assert np.abs(seen["log"].mean(axis=(1, 2, 3))).min() > 0.1
  with pytest.raises(UserError, match="input_norm 'max' is not one of"):
    network.NetworkConfig(input_norm="max").validate(PROBE)


def test_probe_input_shows_the_network_the_scans_probe(geometry):
  """probe_input: the network's input gains the probe's real and imaginary
  planes over its RMS amplitude: the training probe in the fixed-geometry
  call, the scan's in reconstruct_scan (whose output then changes with the
  probe's shape, not with its scale); it round-trips through the config."""
  model = network.build_model(network.NetworkConfig(
      base_channels=4, depth=2, probe_input=True), geometry)
  assert model.patch_network.input_shape[-1] == 3
  calls = []
  original = model.patch_network
  model.patch_network = lambda x, training=False, f=original: (
      calls.append(x.numpy()) or f(x, training=training))
  amps = np.random.default_rng(3).uniform(
      0, 3, (1, geometry.num_positions, *PROBE)).astype(np.float32)
  model.patch_tensor(amps)
  probe = geometry.probe / np.sqrt(np.mean(np.abs(geometry.probe) ** 2))
  np.testing.assert_allclose(calls[0][3, ..., 1], probe.real, atol=1e-5)
  np.testing.assert_allclose(calls[0][0, ..., 2], probe.imag, atol=1e-5)
  corners = geometry.layout[None, :, [0, 2]].astype(np.float32)
  other = probe_lib.make_probe(PROBE, "pinhole", 0.5)
  model.reconstruct_scan(amps, corners, other)
  np.testing.assert_allclose(
      calls[-1][0, ..., 1] + 1j * calls[-1][0, ..., 2],
      other / np.sqrt(np.mean(np.abs(other) ** 2)), atol=1e-5)
  model.patch_network = original
  scaled = model.reconstruct_scan(amps * 2, corners, other * 2)
  same = model.reconstruct_scan(amps, corners, other)
  np.testing.assert_allclose(scaled["amplitude"], same["amplitude"],
                             atol=1e-5)
  copy = network.PtychoNet.from_config(model.get_config())
  assert copy.probe_input and copy.network_config.probe_input


def test_batchnorm_momentum_is_one_setting(geometry):
  """--batchnorm_momentum: declared once in NetworkConfig, it reaches every
  BatchNorm layer, model.json (a model.json without it means 0.9), the flags
  and the run directory's compatibility check."""
  model = small_model(geometry, batchnorm_momentum=0.5,
                      architecture="residual")
  norms = [l for l in model.patch_network.layers
           if isinstance(l, keras.layers.BatchNormalization)]
  assert norms and {l.momentum for l in norms} == {0.5}
  config = model.get_config()
  assert config["batchnorm_momentum"] == 0.5
  assert network.PtychoNet.from_config(config).batchnorm_momentum == 0.5
  default = small_model(geometry, architecture="residual").get_config()
  del default["batchnorm_momentum"]  # as model.json files before it
  assert network.PtychoNet.from_config(default).batchnorm_momentum == 0.9
  assert "batchnorm_momentum" in run_dir.NETWORK_KEYS
  assert run_dir.network_differences(default, config) == [
      "batchnorm_momentum: 0.9 there, 0.5 here"]
  experiment_flags.define_experiment_flags()
  flag = flags.FLAGS["batchnorm_momentum"]
  assert flag.default == 0.9 and "BatchNorm" in flag.help
  with pytest.raises(UserError, match=r"batchnorm_momentum=1.0 must be in "
                     r"\[0, 1\)"):
    network.NetworkConfig(batchnorm_momentum=1.0).validate((16, 16))
