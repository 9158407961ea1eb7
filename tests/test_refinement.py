"""Physics-unrolled refinement: the update against numpy, convergence,
gradients, training end to end, truncated exports."""
import dataclasses
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import write_tiny
from ptychonet_tf.data import pipeline
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import losses
from ptychonet_tf.model import network
from ptychonet_tf.model import refinement
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import evaluator
from ptychonet_tf.training import run_dir
from ptychonet_tf.training import task as task_lib
from ptychonet_tf.training import trainer
from ptychonet_tf.utils import machine


def _scan(seed=0, size=16):
  probe = probe_lib.make_probe((size, size), "zone_plate", 0.5)
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(30, 1.6), (size, size))
  rng = np.random.default_rng(seed)
  amp = 0.75 + 0.25 * rng.uniform(-1, 1, shape)
  phase = rng.uniform(-1.0, 0.0, shape)
  obj = (amp * np.exp(1j * phase)).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return probe, layout, shape, obj, amps


def _layer(probe, layout, shape, steps, filters=0, groups=1, jit_compile=True):
  """The steps XLA-compiled (the exported path) unless `jit_compile` is
  False: plain ops, for tests of what the steps converge to (compiling 20
  unrolled steps takes ~10 s here, running them plain well under 1 s)."""
  layer = refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag,
                                        steps, filters, groups=groups,
                                        jit_compile=jit_compile)
  layer.build()
  return layer


def _numpy_error_reduction(obj, probe, layout, amps, inertia):
  """sum_j conj(P) Pi_F(P O_j) / (sum_j |P|^2 + e), in numpy (detector frame)."""
  numerator = np.zeros(obj.shape, np.complex128)
  norm = np.zeros(obj.shape)
  for (t, b, l, r), a in zip(layout, amps):
    wave = probe * obj[t:b, l:r]
    spectrum = np.fft.fftshift(np.fft.fft2(wave, norm="ortho"))
    projected = np.fft.ifft2(np.fft.ifftshift(a * np.exp(1j * np.angle(spectrum))),
                             norm="ortho")
    numerator[t:b, l:r] += np.conj(probe) * projected
    norm[t:b, l:r] += np.abs(probe) ** 2
  covered = norm > 0
  ratio = obj.copy()
  # The layer's step: O + (numerator - norm * O) / (norm + e).
  eps = inertia * norm.max()
  ratio[covered] = (obj + (numerator - norm * obj) / (norm + eps))[covered]
  return ratio


def test_one_step_is_error_reduction():
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(1)
  start = (obj * np.exp(0.2j * rng.standard_normal(shape))).astype(np.complex64)
  layer = _layer(probe, layout, shape, 1)
  assert layer.momentum.numpy()[0] == 0.0  # Nesterov's k/(k+3) at k = 0
  got = layer(start[None], amps[None]).numpy()[0]
  want = _numpy_error_reduction(start.astype(np.complex128), probe, layout,
                                amps, layer.inertia)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_line_search_scales_the_step_by_lsqmls_step_length():
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(2)
  start = (obj * np.exp(0.3j * rng.standard_normal(shape))).astype(
      np.complex128)
  layer = refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag,
                                        1, inertia=0.3, line_search=True,
                                        jit_compile=False)
  layer.build()
  got = layer(start[None].astype(np.complex64), amps[None]).numpy()[0]
  direction = _numpy_error_reduction(start, probe, layout, amps,
                                     layer.inertia) - start
  # Per position the alpha fitting chi_j = Pi_F(P O_j) - P O_j with
  # alpha P D_j (diagonal loaded by 1e-3 of the mean), clipped to [0, 10],
  # averaged over the positions.
  a, b = [], []
  for (t, bottom, l, r), amp in zip(layout, amps):
    wave = probe * start[t:bottom, l:r]
    spectrum = np.fft.fftshift(np.fft.fft2(wave, norm="ortho"))
    chi = np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * np.angle(
        spectrum))), norm="ortho") - wave
    u = probe * direction[t:bottom, l:r]
    a.append(np.sum(np.abs(u) ** 2))
    b.append(np.sum(np.real(np.conj(u) * chi)))
  a = np.array(a) + 1e-3 * np.mean(a)
  alpha = np.mean(np.clip(np.array(b) / a, 0, 10))
  assert alpha > 1.05  # the inertia shortens the step; the fit sees it
  np.testing.assert_allclose(got, start + alpha * direction, atol=5e-5)


def test_restart_keeps_heavy_momentum_from_diverging():
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(3)
  start = (obj * (1 + 0.2 * rng.standard_normal(shape)) *
           np.exp(0.3j * rng.standard_normal(shape))).astype(np.complex64)
  lit = layouts.illuminated_region(layout, shape, probe)

  def error(restart):
    layer = refinement.UnrolledRefinement(
        layout, shape, probe.real, probe.imag, 30, groups=3,
        restart=restart, jit_compile=False)
    layer.build()
    layer.momentum.assign(np.full(30, 0.99, np.float32))
    out = layer(start[None], amps[None]).numpy()[0]
    return metrics.complex_metrics(out, obj, lit)["amplitude_psnr"]

  before = metrics.complex_metrics(start, obj, lit)["amplitude_psnr"]
  plain, restarted = error(False), error(True)
  # Measured: 10.4 dB at the start, 24.6 without the restart, 31.1 with.
  assert restarted > before + 10
  assert restarted > plain + 4


@pytest.mark.slow
def test_poisson_steps_keep_the_amplitude_at_low_counts():
  """At ~0.1 photons per pixel the mean of sqrt(counts) falls far short of
  the amplitude, so Gaussian (modulus) steps shrink the object; the
  Poisson likelihood's steps keep its mean amplitude."""
  probe, layout, shape, obj, amps = _scan()
  lit = metrics.illuminated_region(layout, shape, probe) > 0
  noisy = forward.poisson_amplitudes(amps, 30, [0, 0])[None]
  truth = np.abs(obj)[lit].mean()
  means = {}
  for model in ("gaussian", "poisson"):
    layer = refinement.UnrolledRefinement(layout, shape, probe.real,
                                          probe.imag, 20, inertia=0.3,
                                          noise_model=model, jit_compile=False)
    layer.build()
    out = layer(tf.constant(obj[None]), noisy).numpy()[0]
    means[model] = np.abs(out)[lit].mean() / truth
  assert means["gaussian"] < 0.85 and abs(means["poisson"] - 1) < 0.05, means
  assert layer.get_config()["noise_model"] == "poisson"
  for bad in (dict(noise_model="laplace"),
              dict(noise_model="poisson", data_steps="dm")):
    with pytest.raises(ValueError, match="noise model"):
      refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag, 2,
                                    **bad)


def test_grouped_steps_are_error_reduction_on_each_group_in_turn():
  """Three groups, three steps without momentum: step k is the
  error-reduction update on group k's positions (every 3rd from the k-th)
  applied to the previous step's object, with that group's normaliser."""
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(3)
  start = (obj * np.exp(0.2j * rng.standard_normal(shape))).astype(np.complex64)
  layer = _layer(probe, layout, shape, 3, groups=3)
  layer.momentum.assign(np.zeros(3, np.float32))
  got = layer(start[None], amps[None]).numpy()[0]
  want = start.astype(np.complex128)
  for k in range(3):
    want = _numpy_error_reduction(want, probe, layout[k::3], amps[k::3],
                                  layer.inertia)
  np.testing.assert_allclose(got, want, atol=5e-5)
  # Not the full-batch steps: the groups matter.
  full = _layer(probe, layout, shape, 3)
  full.momentum.assign(np.zeros(3, np.float32))
  assert np.abs(full(start[None], amps[None]).numpy()[0] - got).max() > 1e-3


def test_steps_on_a_scan_given_as_tensors_are_the_numpy_ones():
  """refine_scan with the physics of a scan known only inside a graph
  (unknown N and object size): the grouped error-reduction steps of the
  numpy reference on that scan, whatever layout the layer was built with."""
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(4)
  start = (obj * np.exp(0.2j * rng.standard_normal(shape))).astype(np.complex64)
  other, _ = layouts.layout_from_positions(layouts.mesh(3, 3, 5), (16, 16))
  layer = _layer(probe, other, (26, 26), 2, groups=2)
  layer.momentum.assign(np.zeros(2, np.float32))

  @tf.function(input_signature=[
      tf.TensorSpec([1, None, None], tf.complex64),
      tf.TensorSpec([1, None, 16, 16], tf.float32),
      tf.TensorSpec([None, 2], tf.int32), tf.TensorSpec([2], tf.int32)])
  def refine(start, amps, corners, object_shape):
    physics = refinement.ScanPhysics.of_scan(corners, object_shape, probe, 2)
    obj, same = layer.refine_scan(start, amps, physics)
    tf.debugging.assert_equal(same, tf.constant(probe, tf.complex64))
    return obj

  got = refine(start[None], amps[None], layout[:, [0, 2]],
               np.asarray(shape, np.int32)).numpy()[0]
  want = start.astype(np.complex128)
  for k in range(2):
    want = _numpy_error_reduction(want, probe, layout[k::2], amps[k::2],
                                  layer.inertia)
  np.testing.assert_allclose(got, want, atol=5e-5)


def test_probe_steps_fit_a_defocused_probe():
  """ScanPhysics(refine_probe=True): from a probe with a quadratic phase
  error, the steps that also refine the probe explain the data far better
  than the same steps with the wrong probe kept, and move the probe toward
  the true one."""
  probe, layout, shape, obj, amps = _scan()
  y, x = np.mgrid[:16, :16] - 7.5
  wrong = (probe * np.exp(0.8j * (x ** 2 + y ** 2) / 40.0)).astype(np.complex64)
  rng = np.random.default_rng(6)
  start = (obj * np.exp(0.1j * rng.standard_normal(shape))).astype(np.complex64)
  layer = _layer(probe, layout, shape, 12, groups=2)
  layer.momentum.assign(np.zeros(12, np.float32))
  corners, size = layout[:, [0, 2]], np.asarray(shape, np.int32)
  results = {}
  for refine in (False, True):
    physics = refinement.ScanPhysics.of_scan(corners, size, wrong, 2,
                                             refine_probe=refine)
    got, got_probe = layer.refine_scan(start[None], amps[None], physics)
    spectra = physics.operator.spectra(got, got_probe)
    loop = physics.operator.loop_amplitudes_tensor(amps[None])
    results[refine] = (float(physics.operator.misfit(spectra, loop)[0]),
                       got_probe.numpy())
  assert results[True][0] < 0.3 * results[False][0], results
  np.testing.assert_array_equal(results[False][1], wrong)

  def error(p):  # up to the global phase the data cannot see
    p = p * np.exp(-1j * np.angle(np.vdot(probe, p)))
    return np.linalg.norm(p - probe) / np.linalg.norm(probe)

  assert error(results[True][1]) < 0.7 * error(wrong), (
      error(results[True][1]), error(wrong))


def test_inertia_sets_the_preconditioner_floor():
  """A larger inertia is the same error-reduction step with a larger e."""
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(4)
  start = (obj * np.exp(0.2j * rng.standard_normal(shape))).astype(np.complex64)
  layer = refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag,
                                        1, inertia=0.3)
  layer.build()
  got = layer(start[None], amps[None]).numpy()[0]
  want = _numpy_error_reduction(start.astype(np.complex128), probe, layout,
                                amps, 0.3)
  np.testing.assert_allclose(got, want, atol=2e-5)
  with pytest.raises(ValueError, match="inertia"):
    refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag, 1,
                                  inertia=0.0)


def test_smoothing_starts_as_the_identity_and_filters_with_its_kernel():
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(5)
  start = (obj * np.exp(0.2j * rng.standard_normal(shape))).astype(np.complex64)
  plain = _layer(probe, layout, shape, 2)
  smooth = refinement.UnrolledRefinement(layout, shape, probe.real,
                                         probe.imag, 2, smoothing=5)
  smooth.build()
  unfiltered = plain(start[None], amps[None]).numpy()[0]
  np.testing.assert_allclose(smooth(start[None], amps[None]).numpy()[0],
                             unfiltered, atol=1e-6)
  kernel = rng.uniform(0, 1, (5, 5)).astype(np.float32)
  smooth.set_smoothing_kernel(kernel / kernel.sum())
  np.testing.assert_allclose(smooth.smoothing_kernel, kernel / kernel.sum(),
                             atol=1e-7)
  got = smooth(start[None], amps[None]).numpy()[0]
  # A correlation, reflected at the border without repeating the edge.
  want = (ndimage.correlate(unfiltered.real, kernel / kernel.sum(),
                            mode="mirror") +
          1j * ndimage.correlate(unfiltered.imag, kernel / kernel.sum(),
                                 mode="mirror"))
  np.testing.assert_allclose(got, want, atol=1e-5)
  for size in (2, -1):
    with pytest.raises(ValueError, match="smoothing"):
      refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag, 1,
                                    smoothing=size)


def test_position_groups_interleave_and_cover_every_position():
  groups = layouts.interleaved_groups(10, 3)
  assert [g.tolist() for g in groups] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
  probe, layout, shape, _, _ = _scan()
  with pytest.raises(ValueError, match="position groups 31 must be in"):
    _layer(probe, layout, shape, 2, groups=31)
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  with pytest.raises(Exception, match="refine_groups=31 exceeds the scan's 30"):
    network.build_model(NetworkConfig(base_channels=4, depth=2, refine_steps=2,
                                      refine_groups=31), geometry)
  with pytest.raises(Exception, match="refine_groups=0 must be >= 1"):
    NetworkConfig(refine_steps=2, refine_groups=0).validate((16, 16))
  with pytest.raises(Exception, match="refine_inertia=0.0 must be > 0"):
    NetworkConfig(refine_steps=2, refine_inertia=0.0).validate((16, 16))


@pytest.mark.slow
def test_grouped_steps_converge_faster_than_full_ones_per_fft():
  """Two group steps cost what one full step costs (the same windows and
  FFTs); on an overlapping scan they get closer to the object."""
  probe, layout, shape, obj, amps = _scan()
  covered = layouts.scanned_mask(layout, shape)
  rng = np.random.default_rng(2)
  start = (obj * np.exp(0.3j * rng.standard_normal(shape))).astype(np.complex64)

  def error(x):
    x = x * np.exp(1j * np.angle(np.vdot(x[covered], obj[covered])))
    return np.linalg.norm((x - obj)[covered]) / np.linalg.norm(obj[covered])

  full = _layer(probe, layout, shape, 5, jit_compile=False)(
      start[None], amps[None])
  grouped = _layer(probe, layout, shape, 10, groups=2, jit_compile=False)(
      start[None], amps[None])
  assert error(grouped.numpy()[0]) < 0.7 * error(full.numpy()[0])


def test_initial_momentum_is_nesterov_up_to_its_limit():
  np.testing.assert_allclose(refinement.initial_momentum(4),
                             [0, 1 / 4, 2 / 5, 3 / 6])
  momentum = refinement.initial_momentum(40)
  assert momentum.max() == pytest.approx(refinement.MOMENTUM_LIMIT)
  np.testing.assert_allclose(momentum[:10], np.arange(10) / (np.arange(10) + 3))


@pytest.mark.slow
def test_steps_converge_from_a_perturbed_start():
  probe, layout, shape, obj, amps = _scan()
  covered = layouts.scanned_mask(layout, shape)
  rng = np.random.default_rng(2)
  start = (obj * (1 + 0.1 * rng.standard_normal(shape)) *
           np.exp(0.3j * rng.standard_normal(shape))).astype(np.complex64)

  def error(x):
    x = x * np.exp(1j * np.angle(np.vdot(x[covered], obj[covered])))
    return np.linalg.norm((x - obj)[covered]) / np.linalg.norm(obj[covered])

  errors = [error(start)]
  for steps in (5, 20):
    out = _layer(probe, layout, shape, steps, jit_compile=False)(
        start[None], amps[None])
    errors.append(error(out.numpy()[0]))
  assert errors[2] < errors[1] < errors[0]
  assert errors[2] < 0.5 * errors[0]


def _model(probe, layout, shape, groups=1):
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  return network.build_model(
      NetworkConfig(base_channels=4, depth=2, refine_steps=3,
                    refine_filters=2, refine_groups=groups,
                    refine_inertia=0.1, refine_smoothing=3), geometry)


def test_gradients_are_finite_and_reach_every_parameter():
  probe, layout, shape, _, amps = _scan()
  model = _model(probe, layout, shape)
  with tf.GradientTape() as tape:
    out = model(amps[None], training=True)
    loss = tf.reduce_mean(out["amplitude"]) + tf.reduce_mean(out["phase"])
  grads = tape.gradient(loss, model.trainable_variables)
  names = [v.path for v in model.trainable_variables]
  assert any("momentum" in n for n in names)
  assert any("correction" in n for n in names)
  assert any("smoothing_delta" in n for n in names)
  for name, g in zip(names, grads):
    assert g is not None, name
    assert np.all(np.isfinite(g.numpy())), name


@pytest.mark.slow
def test_tracing_the_gradient_logs_no_complex_cast_warning(caplog):
  """Real learned scalars enter the complex steps by
  forward.real_to_complex: tf.cast's gradient logged "casting complex64 to
  float32 discards the imaginary part" at every trace (80 lines a
  training)."""
  probe, layout, shape, _, amps = _scan()
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(
      NetworkConfig(base_channels=4, depth=2, refine_steps=2,
                    refine_filters=2, refine_inertia=0.1,
                    refine_noise_model="poisson", refine_line_search=True),
      geometry)

  @tf.function
  def gradients(amplitudes):
    with tf.GradientTape() as tape:
      out = model(amplitudes, training=True)
      loss = tf.reduce_mean(out["amplitude"]) + tf.reduce_mean(out["phase"])
    return tape.gradient(loss, model.trainable_variables)

  with caplog.at_level("WARNING", logger="tensorflow"):
    grads = gradients(amps[None])
  assert all(g is not None for g in grads)
  assert not [r for r in caplog.records if "casting" in r.getMessage()]


@pytest.mark.slow  # 3.4-4.2 s on an AVX2-only CPU
def test_config_round_trip_and_truncated_copies():
  probe, layout, shape, _, amps = _scan()
  model = _model(probe, layout, shape, groups=2)
  model(amps[None])
  model.refinement.step_size.assign([0.9, 1.1, 0.7])
  model.refinement.set_smoothing_kernel(np.full((3, 3), 1 / 9, np.float32))
  clone = network.PtychoNet.from_config(model.get_config())
  assert clone.refinement.groups == 2
  assert clone.refinement.inertia == 0.1 and clone.refinement.smoothing == 3
  clone(amps[None])
  clone.set_weights(model.get_weights())
  np.testing.assert_allclose(clone(amps[None])["phase"],
                             model(amps[None])["phase"], atol=1e-5)
  full = export_lib.float32_copy(model)
  np.testing.assert_allclose(full(amps[None])["amplitude"],
                             model(amps[None])["amplitude"], atol=1e-5)
  none = export_lib.float32_copy(model, refine_steps=0)
  assert none.refinement is None
  # XLA only where the refinement steps need it anyway: then the stitch too.
  assert full.stitch.jit_compile and full.refinement.jit_compile
  assert not none.stitch.jit_compile
  plain = export_lib.float32_copy(model, xla=False)
  assert not plain.stitch.jit_compile and not plain.refinement.jit_compile
  _, stitched, _ = model.reconstruct(amps[None])
  np.testing.assert_allclose(none(amps[None])["amplitude"],
                             stitched["amplitude"], atol=1e-6)
  two = export_lib.float32_copy(model, refine_steps=2)
  np.testing.assert_allclose(two.refinement.step_size.numpy(), [0.9, 1.1])
  np.testing.assert_allclose(two.refinement.smoothing_kernel, 1 / 9,
                             atol=1e-7)
  with pytest.raises(Exception, match="cannot keep 4 refinement steps"):
    export_lib.float32_copy(model, refine_steps=4)


@pytest.mark.slow
def test_training_with_refinement_epochs(tmp_path):
  """Pattern epochs, then an end-to-end epoch; model.json records K."""
  data_dir = write_tiny(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=model_dir,
      network=NetworkConfig(base_channels=4, depth=2, refine_steps=2,
                            refine_filters=2),
      epochs=1, refine_epochs=2, refine_steps_per_epoch=1, batch_size=4,
      num_images=0, export=False, verbose=False)
  assert config.total_epochs == 3
  job = trainer.Trainer(config, tf.distribute.get_strategy())
  assert [job.epoch_steps(e) for e in range(3)] == [2, 1, 1]
  assert [job.epoch_at(s) for s in range(5)] == [0, 0, 1, 2, 3]
  before = job.model.refinement.step_size.numpy().copy()
  scalars = job.train()
  assert np.isfinite(scalars["loss"]) and np.isfinite(scalars["phase_psnr"])
  assert job.step == 4
  # The end-to-end epoch moved the refinement's own parameters.
  assert not np.allclose(job.model.refinement.step_size.numpy(), before)
  model, _, _ = run_dir.load_trained_model(model_dir)
  assert model.refine_steps == 2 and model.refine_filters == 2
  np.testing.assert_allclose(model.refinement.step_size.numpy(),
                             job.model.refinement.step_size.numpy())
  # The checkpoint holds the steps' CNN corrections too (as items of a list
  # they went missing: the model came back with fresh ones).
  for mine, theirs in zip(model.refinement.corrections,
                          job.model.refinement.corrections, strict=True):
    for a, b in zip(mine.weights, theirs.weights, strict=True):
      np.testing.assert_allclose(a, b)


def test_a_refinement_step_whose_gradient_is_not_finite_gets_zeros():
  """One NaN anywhere zeroes the whole update (eager and compiled)."""
  good = [tf.constant([1.0, -2.0]), None, tf.constant([[3.0]])]
  bad = [tf.constant([1.0, -2.0]), None, tf.constant([[np.nan]])]
  for skip in (task_lib.skip_if_not_finite,
               tf.function(task_lib.skip_if_not_finite)):
    out = skip(good)
    assert out[1] is None
    np.testing.assert_array_equal(out[0].numpy(), [1.0, -2.0])
    out = skip(bad)
    assert out[1] is None
    assert not np.any(out[0].numpy()) and not np.any(out[2].numpy())
    out = skip([tf.constant([np.inf])])
    assert not np.any(out[0].numpy())


# Poisson in the release tier (make test-release): its misfit's gradient is
# checked by test_train.py's one-step rows and test_operator.py, and this
# training is the Gaussian row's but for the misfit (11-13 s each).
@pytest.mark.slow
@pytest.mark.parametrize("noise", [
    "gaussian", pytest.param("poisson", marks=pytest.mark.release)])
def test_physics_loss_trains_the_steps_without_objects(tmp_path, noise):
  """--loss=physics: end-to-end steps read only the amplitudes and lower the
  final object's data misfit on held-out scans."""
  data_dir = write_tiny(str(tmp_path / "data"))
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=str(tmp_path / "run"),
      network=NetworkConfig(base_channels=4, depth=2, refine_steps=3),
      epochs=1, refine_epochs=1, batch_size=2, loss="physics",
      physics_noise=noise, refine_learning_rate=0.05, num_images=0,
      export=False, verbose=False)
  keras.utils.set_random_seed(0)  # the Trainer leaves seeding to its caller
  job = trainer.Trainer(config, tf.distribute.get_strategy())
  probe = tf.constant(job.geometry.probe, tf.complex64)
  mask = tf.constant(metrics.illuminated_region(
      job.geometry.layout, job.geometry.object_shape, job.geometry.probe),
                     tf.float32)
  test = next(iter(pipeline.make_dataset(data_dir, "test", 2, shuffle=False)))
  amplitudes_only = {"amplitudes": test["amplitudes"]}

  def held_out_misfit():
    _, _, final = job.model.reconstruct(test["amplitudes"])
    return float(tf.reduce_mean(losses.object_misfit(
        final["amplitude"], final["phase"], probe, job.model.layout,
        test["amplitudes"], noise)))

  # The loss of a batch with no object in it.
  per_scan, _ = evaluator.scan_batch_loss(job.model, amplitudes_only,
                                          config.loss_spec, probe, False, mask)
  assert per_scan.shape == (2,) and np.all(np.isfinite(per_scan.numpy()))
  before = held_out_misfit()
  step = job.task.make_refine_step()
  batches = iter(job.train_dataset(config.epochs))
  for _ in range(6):
    step(batches)
  after = held_out_misfit()
  assert after < 0.95 * before, (before, after)


@pytest.mark.slow
def test_exported_steps_run_in_saved_model_cli(tmp_path):
  """The XLA-compiled steps inside the SavedModel need nothing of this
  package: saved_model_cli runs them in a fresh process with plain
  TensorFlow (tests/test_any_scan.py loads such a model in a fresh script)."""
  cli = shutil.which("saved_model_cli")
  if cli is None:
    pytest.skip("saved_model_cli is not installed")
  probe, layout, shape, _, amps = _scan()
  model = _model(probe, layout, shape)
  model(amps[None])
  model.refinement.step_size.assign([0.9, 1.1, 0.7])
  want = export_lib.float32_copy(model)(amps[None])["phase"].numpy()
  path = export_lib.export_saved_model(model, probe, str(tmp_path / "e"), 1)
  np.save(tmp_path / "x.npy", amps[None])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
       "serving_default", "--inputs", f"amplitudes={tmp_path / 'x.npy'}",
       "--outdir", str(tmp_path / "cli")],
      env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # Another process fuses and orders the float32 sums its own way; a phase
  # where the probe is dim moves by ~1e-3 (seen once at 1.1e-3 in CI).
  np.testing.assert_allclose(np.load(tmp_path / "cli" / "phase.npy"), want,
                             atol=5e-3)


@pytest.mark.slow
def test_compiled_steps_export_with_a_free_batch_axis(tmp_path):
  """The recommended refinement (no CNN corrections) runs XLA-compiled; its
  SavedModel signature has batch None, and the in-place window additions
  must take it (they once failed to export)."""
  probe, layout, shape, _, amps = _scan()
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(
      NetworkConfig(base_channels=4, depth=2, refine_steps=3), geometry)
  batch = np.stack([amps, _scan(seed=1)[4]])
  model(batch)
  want = export_lib.float32_copy(model)(batch)["phase"].numpy()
  path = export_lib.export_saved_model(model, probe, str(tmp_path / "e"), 1)
  serve = tf.saved_model.load(path).signatures["serving_default"]
  got = serve(amplitudes=tf.constant(batch))["phase"].numpy()
  # Compiled again for the signature, the float32 sums fuse and order their
  # own way: the phase where the probe is dim moves by ~1e-4 (as in the
  # cross-process test above).
  np.testing.assert_allclose(got, want, atol=5e-3)
  assert np.abs(got - want).mean() < 1e-4


def _export_tiny_prior(folder, seed=0):
  """An exported prior (prior.json + prior.npz) of a tiny random denoiser."""
  from ptychonet_tf.prior import config as prior_config  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.prior import training as prior_training  # pylint: disable=g-import-not-at-top
  settings = prior_config.NetworkSettings(channels=(4, 8), blocks=1)
  layer = settings.build()
  layer.build((None, None, None))
  rng = np.random.default_rng(seed)
  for w in layer.weights:
    w.assign(0.1 * rng.standard_normal(w.shape).astype(np.float32))
  config = prior_config.PriorTrainConfig(
      model_dir=str(folder / "run"), export_dir=str(folder / "export"),
      images="procedural:4", network=settings, mixed_precision=False)
  prior_training.export(layer, config, config.export_dir)
  return config.export_dir


@pytest.mark.slow
def test_prior_steps_sit_between_the_physics_steps(tmp_path):
  """With a prior, every prior_every-th step ends in a denoising step on the
  lit region, at learned noise levels (geometric at initialisation); the
  denoiser is part of the layer, its config names the prior."""
  from ptychonet_tf.prior import objects as prior_objects  # pylint: disable=g-import-not-at-top
  probe, layout, shape, obj, amps = _scan()
  path = _export_tiny_prior(tmp_path)
  start = tf.constant(np.ones((1, *shape), np.complex64))
  layer = refinement.UnrolledRefinement(
      layout, shape, probe.real, probe.imag, 4, groups=2, prior=path,
      prior_sigma=(0.1, 0.05))
  layer.build()
  assert layer.prior_steps == 2 and layer.prior_every == 2
  np.testing.assert_allclose(np.exp(layer.prior_log_sigma.numpy()),
                             [0.1, 0.05], rtol=1e-6)
  # The same steps by hand (without momentum): two physics steps, a prior
  # step, two more and another prior step.
  layer.momentum.assign(np.zeros(4, np.float32))
  got = layer(start, amps[None]).numpy()
  plain = refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag,
                                        2, groups=2, jit_compile=False)
  plain.build()
  plain.momentum.assign(np.zeros(2, np.float32))
  lit = metrics.illuminated_region(layout, shape, probe).astype(np.float32)
  x = start
  for sigma in (0.1, 0.05):
    x = plain(x, amps[None])
    x = prior_objects.denoise_object(layer.denoiser, x, lit, sigma)
  np.testing.assert_allclose(got, x.numpy(), rtol=1e-3, atol=1e-4)
  assert any("prior_denoiser" in w.path for w in layer.weights)
  # The denoiser's weights are the layer's but stay as loaded: only the
  # noise levels (and the steps' scalars) train.
  assert {v.name for v in layer.trainable_variables} == {
      "momentum", "step_size", "prior_log_sigma"}
  config = layer.get_config()
  assert config["prior"] == path and config["prior_every"] == 2
  again = refinement.UnrolledRefinement.from_config(config)
  again.build()
  again.momentum.assign(np.zeros(4, np.float32))
  np.testing.assert_allclose(again(start, amps[None]).numpy(), got,
                             rtol=1e-5, atol=1e-6)
  # The noise levels get gradients through the compiled steps.
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.abs(layer(start, amps[None]) - obj) ** 2)
  grad = tape.gradient(loss, layer.prior_log_sigma)
  assert grad is not None and np.all(np.isfinite(grad.numpy()))
  assert np.any(grad.numpy() != 0)


@pytest.mark.slow
def test_dm_steps_are_difference_map_iterations():
  """data_steps="dm" with unit step sizes: DM (baselines.dm) from the same
  start, up to float rounding; the momenta are not trained."""
  from ptychonet_tf import reconstructors  # pylint: disable=g-import-not-at-top
  probe, layout, shape, obj, amps = _scan()
  rng = np.random.default_rng(1)
  start = (obj * np.exp(0.3j * rng.standard_normal(shape))).astype(np.complex64)
  layer = refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag,
                                        6, inertia=1e-6, data_steps="dm")
  layer.build()
  assert {v.name for v in layer.trainable_variables} == {"step_size"}
  got = layer(start[None], amps[None]).numpy()[0]
  want = reconstructors.reconstruct(
      "dm", amps, probe, layout, shape,
      reconstructors.configure("dm", iterations=6, chunk=6, object_inertia=1e-6,
                               position_groups=1, progress=False),
      initial_object=start).object
  lit = metrics.illuminated_region(layout, shape, probe)
  np.testing.assert_allclose(got[lit], want[lit], atol=2e-4)
  assert np.abs(got - start)[lit].max() > 0.05  # it moved
  # Half steps move the exit waves half as far: another object.
  layer.step_size.assign(np.full(6, 0.5, np.float32))
  half = layer(start[None], amps[None]).numpy()[0]
  assert np.abs(half - got)[lit].max() > 1e-3
  with pytest.raises(ValueError, match="one position group"):
    refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag, 4,
                                  groups=2, data_steps="dm")
  with pytest.raises(ValueError, match="data steps"):
    refinement.UnrolledRefinement(layout, shape, probe.real, probe.imag, 4,
                                  data_steps="epie")


@pytest.mark.slow
def test_dm_steps_with_a_prior_are_plug_and_play_with_dm(tmp_path):
  """DM steps with prior steps between them: plug-and-play with DM's data
  steps (baselines.pnp.PnPDM: the exit waves shifted by each prior step),
  the same denoiser at the same noise levels; the levels get gradients."""
  from ptychonet_tf.baselines import pnp  # pylint: disable=g-import-not-at-top
  probe, layout, shape, obj, amps = _scan()
  path = _export_tiny_prior(tmp_path)
  # Not a flat start: from one, DM's iterates hinge on float rounding.
  rng = np.random.default_rng(1)
  start = (obj * np.exp(0.3j * rng.standard_normal(shape))).astype(
      np.complex64)[None]
  lit = metrics.illuminated_region(layout, shape, probe)
  for domain, scale in (("complex", 1.0), ("amplitude_phase", 2.0)):
    layer = refinement.UnrolledRefinement(
        layout, shape, probe.real, probe.imag, 6, inertia=1e-6, prior=path,
        prior_every=3, prior_sigma=(0.1, 0.05), data_steps="dm",
        prior_domain=domain, prior_amplitude_scale=scale)
    layer.build()
    got = layer(start, amps[None]).numpy()[0]
    solver = pnp.PnPDM(amps, probe, layout, shape, pnp.PnPConfig(
        iterations=6, chunk=3, sigma_start=0.1, sigma_end=0.05,
        domain=domain, first_sigma_scale=scale, data_steps="dm",
        denoiser=layer.denoiser, progress=False))
    solver.config = dataclasses.replace(solver.config, object_inertia=1e-6,
                                        position_groups=1)
    want = solver.run(start[0]).object
    # (bfloat16 denoiser, XLA against plain ops: a few pixels differ ~2e-3)
    np.testing.assert_allclose(got[lit], want[lit], atol=5e-3)
    config = layer.get_config()
    assert (config["prior_domain"], config["prior_amplitude_scale"],
            config["data_steps"]) == (domain, scale, "dm")
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.abs(layer(start, amps[None]) - obj) ** 2)
  grads = tape.gradient(loss, [layer.prior_log_sigma, layer.step_size])
  for grad in grads:
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert np.any(grad.numpy() != 0)


@pytest.mark.slow
def test_a_model_with_a_prior_exports_with_its_denoiser(tmp_path):
  """The SavedModel holds the denoiser: one call, the model's objects."""
  probe, layout, shape, _, amps = _scan()
  path = _export_tiny_prior(tmp_path)
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=tuple(shape))
  # Seeded: the steps amplify the float rounding of an untrained network's
  # patches by an amount that depends on its draw (tests/test_any_scan.py's
  # refining_model); an unseeded draw, whatever ran before in the process,
  # once passed the float32 bound below.
  keras.utils.set_random_seed(0)
  model = network.build_model(
      NetworkConfig(base_channels=4, depth=2, refine_steps=4,
                    refine_groups=2, refine_prior=path), geometry)
  x = amps[None].astype(np.float32)
  reference = {k: v.numpy() for k, v in model(x).items()}
  base = export_lib.export_saved_model(model, probe, str(tmp_path / "e"), 1)
  shutil.rmtree(path)  # the export needs nothing but itself
  served = tf.saved_model.load(base).signatures["serving_default"](
      amplitudes=tf.constant(x))
  # The denoiser computes in bfloat16 where the CPU does so natively
  # (machine.fast_policy): a few 1e-3 apart from graph to graph, a rare
  # pixel 2e-2 (a fresh-clone CI run: 1 of 992 at 0.023); in float32, XLA's
  # sums against eager ones, a rare pixel 1e-4 and a mean 1e-5 (an AVX2-only
  # CPU: 1.04e-4 and 1.17e-5). A lost denoiser moves every pixel by ~0.1,
  # which the mean catches.
  bf16 = machine.fast_policy() == "mixed_bfloat16"
  for key in ("amplitude", "phase"):
    diff = np.abs(served[key].numpy() - reference[key])
    assert diff.max() < (5e-2 if bf16 else 1e-3), (key, diff.max())
    assert diff.mean() < (2e-3 if bf16 else 1e-4), (key, diff.mean())


@pytest.mark.slow
def test_a_trained_prior_learns_at_its_own_rate(tmp_path):
  """--refine_prior_train: the denoiser's weights get an optimizer of their
  own at refine_prior_learning_rate; at the refinement's rate (1e-2, meant
  for step sizes) a sparse model's end-to-end epoch diverged to inf."""
  data_dir = write_tiny(str(tmp_path / "data"))
  path = _export_tiny_prior(tmp_path)
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=str(tmp_path / "run"),
      network=NetworkConfig(base_channels=4, depth=2, refine_steps=2,
                            refine_prior=path, refine_prior_every=1,
                            refine_prior_train=True),
      epochs=1, refine_epochs=1, batch_size=2, refine_learning_rate=0.05,
      refine_prior_learning_rate=1e-4, num_images=0, export=False,
      verbose=False)
  keras.utils.set_random_seed(0)
  job = trainer.Trainer(config, tf.distribute.get_strategy())
  own, denoiser = task_lib.refine_variables(job.model.refinement)
  assert denoiser and {v.path for v in own}.isdisjoint(
      {v.path for v in denoiser})
  assert len(own) + len(denoiser) == len(
      job.model.refinement.trainable_variables)
  before = [v.numpy().copy() for v in denoiser]
  step_size = job.model.refinement.step_size.numpy().copy()
  step = job.task.make_refine_step()
  loss = step(iter(job.train_dataset(config.epochs)))
  assert np.isfinite(float(loss))
  moved = max(float(np.max(np.abs(v.numpy() - b)))
              for v, b in zip(denoiser, before))
  # Adam's first step moves a weight by lr * |g| / (|g| + epsilon): at most
  # its learning rate, and close to it unless the gradient is near epsilon
  # (1e-7; the step sizes' gradients are ~1e-6, which gives 0.97 lr).
  assert 0 < moved <= 1.01e-4, moved
  step_moved = np.max(np.abs(
      job.model.refinement.step_size.numpy() - step_size))
  assert 0.5 * 0.05 < step_moved <= 1.01 * 0.05, step_moved


@pytest.mark.slow
def test_untied_denoisers_and_exports_keep_the_learned_prior(tmp_path):
  """--refine_prior_untied: a denoiser per prior step, each loaded from the
  prior and trained apart. float32_copy (what every export writes) carries
  the prior steps' learned noise levels and the trained denoisers' weights,
  also when it keeps fewer steps (it once left both at their initial
  values)."""
  probe, layout, shape, _, amps = _scan()
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  config = NetworkConfig(base_channels=4, depth=2, refine_steps=4,
                         refine_prior=_export_tiny_prior(tmp_path),
                         refine_prior_every=2, refine_prior_train=True,
                         refine_prior_untied=True)
  model = network.build_model(config, geometry)
  model(amps[None])
  model.refinement.prior_log_sigma.assign([-1.0, -2.0])
  before = model(amps[None])["phase"].numpy()
  first, second = model.refinement.denoisers
  assert {v.path for v in first.weights}.isdisjoint(
      {v.path for v in second.weights})
  for mine, theirs in zip(first.weights, second.weights, strict=True):
    np.testing.assert_array_equal(mine, theirs)  # both start as the prior
  _, trained = task_lib.refine_variables(model.refinement)
  assert len(trained) == 2 * len(first.trainable_variables) > 0
  assert model.refinement.get_config()["prior_untied"]
  for weight in second.weights:
    weight.assign(weight + 0.05)
  assert np.abs(model(amps[None])["phase"].numpy() - before).max() > 1e-3
  copy = export_lib.float32_copy(model)
  np.testing.assert_array_equal(copy.refinement.prior_log_sigma, [-1, -2])
  for mine, theirs in zip(copy.refinement.denoisers,
                          model.refinement.denoisers, strict=True):
    for a, b in zip(mine.weights, theirs.weights, strict=True):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(copy(amps[None])["phase"],
                             model(amps[None])["phase"], atol=1e-4)
  two = export_lib.float32_copy(model, refine_steps=2)
  np.testing.assert_array_equal(two.refinement.prior_log_sigma, [-1])
  assert len(two.refinement.denoisers) == 1
  # A training checkpoint holds both denoisers (a list of layers once went
  # missing from them).
  fresh = network.build_model(config, geometry)
  fresh(amps[None])
  _assert_checkpoint_round_trip(model, fresh, tmp_path, "denoiser_1")


def _assert_checkpoint_round_trip(model, fresh, folder, child):
  """A training checkpoint of `model` (tf.train.Checkpoint, as train.py
  writes) names `child` of its refinement and restores every weight into
  `fresh`, a model of the same config."""
  path = tf.train.Checkpoint(model=model).save(str(folder / "ckpt"))
  assert any(f"model/refinement/{child}/" in name
             for name, _ in tf.train.list_variables(path))
  status = tf.train.Checkpoint(model=fresh).read(path)
  status.assert_existing_objects_matched()
  assert len(fresh.weights) == len(model.weights)
  for mine, theirs in zip(fresh.weights, model.weights):
    np.testing.assert_array_equal(mine, theirs)

