"""The learned image prior: the denoiser layer, its patches, training, export, loading."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_one_line_error, run_cli
from ptychonet_tf import prior
from ptychonet_tf.data import procedural
from ptychonet_tf.prior import config as config_lib
from ptychonet_tf.prior import data as data_lib
from ptychonet_tf.prior import network
from ptychonet_tf.prior import training
from ptychonet_tf.utils.errors import UserError

TINY = config_lib.NetworkSettings(channels=(4, 8), blocks=1)


def tiny_layer(seed=0, **kwargs):
  """A tiny denoiser with random weights everywhere (the tail too, which is
  zero-initialised and would make the layer the identity)."""
  layer = TINY.build(**kwargs)
  layer.build((None, None, None))
  rng = np.random.default_rng(seed)
  for w in layer.weights:
    w.assign(0.2 * rng.standard_normal(w.shape).astype(np.float32))
  return layer


def tiny_config(tmp_path, **kwargs):
  values = dict(
      model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
      images="procedural:8", network=TINY,
      patches=config_lib.PatchConfig(patch_size=16, seed=3), batch_size=4,
      steps=12, learning_rate=3e-3, warmup_steps=0, log_every=4,
      eval_every=100, checkpoint_every=4, eval_size=32,
      mixed_precision=False)
  values.update(kwargs)
  return config_lib.PriorTrainConfig(**values)


def test_config_round_trip():
  layer = tiny_layer()
  config = layer.get_config()
  assert config["channels"] == [4, 8] and config["blocks"] == 1
  clone = network.PriorDenoiser.from_config(config)
  clone.build((None, None, None))
  for a, b in zip(clone.weights, layer.weights):
    a.assign(b)
  x = np.random.default_rng(1).random((2, 12, 12), np.float32)
  np.testing.assert_allclose(clone(x, 0.1), layer(x, 0.1), atol=1e-6)
  # Registered: keras (de)serialises it by name.
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert isinstance(restored, network.PriorDenoiser)
  assert restored.get_config() == config


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 13, 19), (1, 4, 7),
                                   (21, 10)])
def test_any_size_keeps_shape(shape):
  layer = tiny_layer()
  x = np.random.default_rng(0).random(shape, np.float32)
  out = layer(x, 0.05)
  assert out.shape == shape and out.dtype == tf.float32
  assert np.all(np.isfinite(out.numpy()))


def test_crop_matches_padded_input():
  """Padding is inside the call: a size that needs none gives the U-Net's
  output as is, and batch items are denoised independently."""
  layer = tiny_layer()
  x = np.random.default_rng(2).random((3, 8, 12), np.float32)
  sigma = np.array([0.02, 0.05, 0.1], np.float32)
  together = layer(x, sigma).numpy()
  for i in range(3):
    alone = layer(x[i], sigma[i]).numpy()
    np.testing.assert_allclose(alone, together[i], atol=1e-5)


def test_sigma_conditioning_changes_output():
  layer = tiny_layer()
  x = np.random.default_rng(3).random((1, 12, 12), np.float32)
  low, high = layer(x, 0.01).numpy(), layer(x, 0.2).numpy()
  assert np.max(np.abs(low - high)) > 1e-3


def test_untrained_denoiser_is_identity():
  layer = TINY.build()
  x = np.random.default_rng(4).random((2, 9, 10), np.float32)
  np.testing.assert_allclose(layer(x, 0.1), x, atol=1e-6)


def test_jit_compile_matches_eager():
  layer = tiny_layer()
  x = tf.constant(np.random.default_rng(5).random((2, 10, 14), np.float32))
  fn = tf.function(lambda x, s: layer(x, s), jit_compile=True)
  np.testing.assert_allclose(fn(x, tf.constant([0.05, 0.1])),
                             layer(x, np.array([0.05, 0.1], np.float32)),
                             atol=1e-5)


def test_embeds_in_keras_model():
  layer = tiny_layer()
  x_in = keras.Input((None, None))
  s_in = keras.Input(())
  model = keras.Model([x_in, s_in], layer(x_in, s_in))
  x = np.random.default_rng(6).random((2, 8, 8), np.float32)
  s = np.array([0.1, 0.1], np.float32)
  np.testing.assert_allclose(model([x, s]), layer(x, s), atol=1e-6)


def test_patches_are_deterministic_and_in_range():
  images = [procedural.procedural_image(i, "train", size=40)
            for i in range(2)] + [np.linspace(0, 1, 50 * 60, dtype=np.float32)
                                  .reshape(50, 60)]
  config = config_lib.PatchConfig(patch_size=16, sigma_max=0.1, seed=1)
  source = data_lib.PatchSource(images, [True, True, False], config)
  a, b = source.patch(tf.constant(5, tf.int64)), source.patch(
      tf.constant(5, tf.int64))
  np.testing.assert_array_equal(a["noisy"], b["noisy"])
  assert a["clean"].shape == (16, 16)
  assert 0 <= float(a["sigma"]) <= 0.1
  assert 0 <= float(tf.reduce_min(a["clean"])) <= float(
      tf.reduce_max(a["clean"])) <= 1
  # Batch s of the stream holds patches s*B .. (s+1)*B - 1, so a resumed
  # stream (start_step=2) is the tail of the full one.
  batch = next(iter(source.dataset(3, start_step=2, num_steps=1)))
  expected = [source.patch(tf.constant(i, tf.int64))["noisy"] for i in (6, 7, 8)]
  np.testing.assert_array_equal(batch["noisy"], np.stack(expected))


def test_patch_source_refuses_small_images():
  with pytest.raises(UserError, match="at least 32x32"):
    data_lib.PatchSource([np.zeros((20, 20), np.float32)], [False],
                         config_lib.PatchConfig(patch_size=32))


def test_config_validation():
  with pytest.raises(UserError, match="multiple of 4"):
    config_lib.PriorTrainConfig(
        model_dir="x", network=config_lib.NetworkSettings((8, 16, 32)),
        patches=config_lib.PatchConfig(patch_size=30)).validate()
  with pytest.raises(UserError, match="loss"):
    config_lib.PriorTrainConfig(model_dir="x", loss="huber").validate()


def test_run_dir_of_other_network_refused(tmp_path):
  training.check_run_dir(tiny_config(tmp_path))
  other = tiny_config(tmp_path, network=config_lib.NetworkSettings((8, 16)))
  with pytest.raises(UserError, match="holds a prior run of network"):
    training.check_run_dir(other)


def test_export_and_load_give_equal_outputs(tmp_path):
  layer = tiny_layer()
  config = tiny_config(tmp_path)
  training.export(layer, config, config.export_dir, record={"step": 7})
  loaded = prior.load(config.export_dir)
  x = np.random.default_rng(7).random((2, 11, 13), np.float32)
  s = np.array([0.03, 0.08], np.float32)
  np.testing.assert_allclose(loaded(x, s), layer(x, s), atol=1e-6)
  served = tf.saved_model.load(os.path.join(config.export_dir,
                                            training.SAVED_MODEL_DIR))
  out = served.signatures["serving_default"](x=tf.constant(x),
                                             sigma=tf.constant(s))
  np.testing.assert_allclose(out["denoised"], layer(x, s), atol=1e-5)
  assert prior.info(config.export_dir)["step"] == 7


def test_load_refuses_missing_or_mismatched(tmp_path):
  with pytest.raises(UserError, match="holds no prior.json"):
    prior.load(str(tmp_path))
  layer = tiny_layer()
  config = tiny_config(tmp_path)
  training.export(layer, config, config.export_dir)
  path = os.path.join(config.export_dir, "prior.json")
  with open(path) as f:
    info = json.load(f)
  info["network"]["channels"] = [4, 16]
  with open(path, "w") as f:
    json.dump(info, f)
  with pytest.raises(UserError, match="do not fit"):
    prior.load(config.export_dir)


@pytest.mark.slow
def test_training_lowers_loss_and_resumes(tmp_path):
  config = tiny_config(tmp_path, steps=48, log_every=8, checkpoint_every=8,
                       learning_rate=1e-2, loss="l1", batch_size=8)
  # train() leaves the initialisation seed to its caller, as cli/train_prior
  # does: unseeded, the 48 steps ended anywhere in 20.9-22.7 dB and at a
  # loss ratio of 0.82-0.93 (seeds 0-7: 21.6-22.6 dB, 0.86-0.93).
  keras.utils.set_random_seed(0)
  first = training.train(config, progress=False, stop_after=8)
  assert first["step"] == 8
  assert tf.train.latest_checkpoint(config.model_dir).endswith("ckpt-8")
  assert not os.path.exists(config.export_dir)  # not finished: no export
  second = training.train(config, progress=False)  # resumes at 8, ends at 48
  assert second["step"] == 48
  assert tf.train.latest_checkpoint(config.model_dir).endswith("ckpt-48")
  # The mean loss of the last 8 steps against the first 8 (same stream),
  # and the validation crops at sigma 0.1 (noisy: 20.0 dB) get denoised
  # (seed 0: 0.86 and 22.36 dB here, in every run).
  assert second["loss"] < 0.95 * first["loss"], (first, second)
  assert second["eval"][0.1] > 21.0, second
  assert prior.info(config.export_dir)["step"] == 48


def test_shipped_prior_denoises_procedural_image():
  denoise = prior.load()
  clean = procedural.procedural_image(3, "test", size=64)
  noise = np.random.default_rng(0).standard_normal(clean.shape)
  for sigma in (0.05, 0.1):
    noisy = (clean + sigma * noise).astype(np.float32)
    out = denoise(noisy, sigma).numpy()
    psnr_in = data_lib.psnr(noisy[None], clean[None])
    psnr_out = data_lib.psnr(out[None], clean[None])
    assert psnr_out > psnr_in + 3, (sigma, psnr_in, psnr_out)


def test_shipped_prior_inside_jit():
  denoise = prior.load()
  x = tf.constant(procedural.procedural_image(1, "test", size=36)[None])
  fn = tf.function(lambda x: denoise(x, 0.05), jit_compile=True)
  np.testing.assert_allclose(fn(x), denoise(x, 0.05), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--loss=huber"], "--loss=huber"),
    (["--patch_size=30"], "multiple of 4"),
    (["--images=/no/such/folder"], "/no/such/folder"),
    (["--channels=8,x"], "--channels"),
])
def test_bad_flags_end_in_one_line(tmp_path, args, fragment):
  result = run_cli(["-m", "ptychonet_tf.train_prior",
                    f"--model_dir={tmp_path / 'run'}", "--steps=2", *args])
  assert result.returncode == 2
  assert_one_line_error(result, fragment)


@pytest.mark.slow
def test_cli_missing_model_dir():
  result = run_cli(["-m", "ptychonet_tf.train_prior"])
  assert result.returncode == 2
  assert_one_line_error(result, "--model_dir")


@pytest.mark.slow
def test_cli_trains_exports_and_saves_flags(tmp_path):
  run, export, ship = tmp_path / "run", tmp_path / "export", tmp_path / "ship"
  args = ["-m", "ptychonet_tf.train_prior", f"--model_dir={run}",
          f"--export_dir={export}", f"--ship_dir={ship}",
          "--images=procedural:8", "--channels=4,8", "--blocks=1",
          "--patch_size=16", "--batch_size=4", "--steps=6", "--log_every=3",
          "--eval_size=32", "--nomixed_precision"]
  result = run_cli(args)
  assert result.returncode == 0, result.stderr
  assert "step 6/6" in result.stdout
  assert "--steps=6" in (run / "flags.txt").read_text()
  for folder in (export, ship):
    assert (folder / "prior.npz").is_file() and (folder / "prior.json").is_file()
  assert (export / "saved_model" / "saved_model.pb").is_file()
  x = np.random.default_rng(0).random((1, 16, 16), np.float32)
  np.testing.assert_allclose(prior.load(str(ship))(x, 0.1),
                             prior.load(str(export))(x, 0.1))


def test_pair_patches_transform_both_images_alike():
  rng = np.random.default_rng(0)
  targets = rng.random((3, 20, 24)).astype(np.float32)
  inputs = targets + 0.5  # a constant offset survives every flip and crop
  sigmas = np.array([0.2, 0.3, 0.4], np.float32)
  source = data_lib.PairSource(inputs, targets, sigmas, patch_size=8, seed=2)
  for index in range(6):
    a = source.patch(tf.constant(index, tf.int64))
    b = source.patch(tf.constant(index, tf.int64))
    np.testing.assert_array_equal(a["noisy"], b["noisy"])
    np.testing.assert_allclose(a["noisy"] - a["clean"], 0.5, atol=1e-6)
    assert a["clean"].shape == (8, 8)
    assert float(a["sigma"]) in sigmas
  with pytest.raises(UserError, match="smaller than the patch size"):
    data_lib.PairSource(inputs, targets, sigmas, patch_size=32)
  with pytest.raises(UserError, match="expected"):
    data_lib.PairSource(inputs, targets[:2], sigmas, patch_size=8)


def test_mixed_source_draws_both_kinds_deterministically():
  images = [procedural.procedural_image(i, "train", size=40) for i in range(2)]
  patches = data_lib.PatchSource(images, [True, True], config_lib.PatchConfig(
      patch_size=16, sigma_max=0.1, seed=1))
  clean = np.zeros((2, 20, 20), np.float32)
  pairs = data_lib.PairSource(clean + 0.5, clean, np.full(2, 0.3, np.float32),
                              patch_size=16)
  mixed = data_lib.MixedSource(patches, pairs, 0.5, seed=1)
  batch = next(iter(mixed.dataset(16, start_step=0, num_steps=1)))
  again = next(iter(mixed.dataset(16, start_step=0, num_steps=1)))
  np.testing.assert_array_equal(batch["noisy"], again["noisy"])
  from_pairs = np.isclose(batch["sigma"].numpy(), 0.3)
  assert 0 < from_pairs.sum() < 16  # 16 draws of a fair coin
  assert np.all(batch["sigma"].numpy()[~from_pairs] <= 0.1)


def test_scaled_pairs_use_the_priors_map():
  from ptychonet_tf.prior import objects as prior_objects
  from ptychonet_tf.prior import pairs
  rng = np.random.default_rng(1)
  truth = (rng.uniform(0.5, 1, (2, 12, 12)) *
           np.exp(1j * rng.uniform(-1, 0, (2, 12, 12)))).astype(np.complex64)
  estimate = (truth * np.exp(0.3j)).astype(np.complex64)  # a phase offset
  lit = np.zeros((12, 12), bool)
  lit[2:10, 1:11] = True
  assert pairs.lit_box(lit) == (2, 10, 2, 10)
  inputs, targets = pairs.scaled_pairs(estimate, truth, lit)
  assert inputs.shape == targets.shape == (4, 8, 8)
  # The truth's phase offset is aligned: no error is left.
  np.testing.assert_allclose(inputs, targets, atol=1e-5)
  # The inputs are what denoise_images hands the denoiser.
  seen = []
  prior_objects.denoise_object(lambda x, s: seen.append(np.asarray(x)) or x,
                               estimate, lit.astype(np.float32), 0.2)
  np.testing.assert_allclose(inputs, seen[0][:, 2:10, 2:10], atol=1e-5)


@pytest.mark.slow
def test_amplitude_phase_gradients_are_finite_where_the_object_is_zero():
  """A pixel that is exactly 0 (off the stitched patches, unlit) has an
  infinite phase gradient; the prior step must not turn it into NaN."""
  from ptychonet_tf.prior import objects as prior_objects
  obj = np.full((1, 8, 8), 0.8 * np.exp(-0.5j), np.complex64)
  obj[0, 0, :] = 0
  lit = np.ones((8, 8), np.float32)
  lit[0, :] = 0
  x = tf.Variable(obj)
  for domain in prior_objects.DOMAINS:
    with tf.GradientTape() as tape:
      out = prior_objects.denoise_object(lambda im, s: 0.9 * im + 0.05, x,
                                         lit, 0.1, domain)
      loss = tf.reduce_sum(tf.abs(out) ** 2)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)), domain
    assert np.all(grad[0, 1:] != 0) and np.all(out.numpy()[0, 0] == 0)


@pytest.mark.slow  # 3-3.7 s on an AVX2-only CPU
def test_init_from_starts_at_the_exported_weights(tmp_path):
  layer = tiny_layer()
  source = tiny_config(tmp_path / "a")
  training.export(layer, source, source.export_dir)
  config = tiny_config(tmp_path / "b", init_from=source.export_dir,
                       learning_rate=1e-9, warmup_steps=0, steps=1)
  training.train(config, progress=False)
  loaded = prior.load(config.export_dir)
  x = np.random.default_rng(3).random((1, 16, 16), np.float32)
  np.testing.assert_allclose(loaded(x, 0.1), layer(x, 0.1), atol=1e-3)
  other = tiny_config(tmp_path / "c", init_from=source.export_dir,
                      network=config_lib.NetworkSettings((8, 16)))
  with pytest.raises(UserError, match="is a prior of network"):
    training.train(other, progress=False)


def test_base_prior_ships_beside_the_fine_tuned_one():
  base = os.path.join(os.path.dirname(prior.DEFAULT_DIR), "weights_base")
  assert "pairs" not in prior.info(base) and "pairs" in prior.info()
  x = np.random.default_rng(4).random((1, 16, 16), np.float32)
  assert prior.load(base)(x, 0.1).shape == (1, 16, 16)
