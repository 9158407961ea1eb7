"""Training of the prior: a resumable loop, TensorBoard summaries and export.

The run directory (`model_dir`) holds

  prior.json          the network settings (a run of other settings is refused)
  flags.txt           the resolved flags of the latest start (cli/train_prior.py)
  checkpoint, ckpt-*  tf.train.CheckpointManager checkpoints (model, optimizer,
                      step), every `checkpoint_every` steps and at the end
  train/, eval/       TensorBoard: loss, learning rate, patterns/s; PSNR on the
                      validation crops per noise level, and image panels

A run killed and started again continues from its last checkpoint: the patch
stream is a pure function of (seed, step), so it resumes where it stopped.
At the end the weights are exported (`export`) to `export_dir`:

  prior.json          network settings and training record
  prior.npz           the weights (float32), what `prior.load` reads
  saved_model/        a SavedModel whose `serving_default` takes `x` [batch,
                      H, W] and `sigma` [batch] (float32) and returns
                      `denoised` [batch, H, W]
"""
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf
import keras

from ptychonet_tf.prior import data as data_lib
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

CONFIG_FILE = "prior.json"
WEIGHTS_FILE = "prior.npz"
SAVED_MODEL_DIR = "saved_model"
FLAGS_FILE = "flags.txt"
# Noise levels of the validation PSNR summaries (images in [0, 1]).
EVAL_SIGMAS = (0.02, 0.05, 0.1)


def learning_rate_schedule(config):
  """Linear warm-up to learning_rate, then cosine decay to the final fraction."""
  return keras.optimizers.schedules.CosineDecay(
      0.0 if config.warmup_steps else config.learning_rate,
      decay_steps=max(1, config.steps - config.warmup_steps),
      alpha=config.final_lr_fraction,
      warmup_target=config.learning_rate if config.warmup_steps else None,
      warmup_steps=config.warmup_steps)


def loss_value(config, denoised, clean, sigma):
  """The training loss of a batch: float32 [] (see PriorTrainConfig.loss)."""
  err = denoised - clean
  if config.loss == "l1":
    return tf.reduce_mean(tf.abs(err))
  per_patch = tf.reduce_mean(tf.square(err), axis=[1, 2])
  if config.loss == "relative_mse":
    per_patch = per_patch / (tf.square(sigma) + 0.01 ** 2)
  return tf.reduce_mean(per_patch)


def check_run_dir(config):
  """Refuses a run directory whose prior.json names other network settings;
  writes prior.json for a new run."""
  path = os.path.join(config.model_dir, CONFIG_FILE)
  wanted = config.network.as_dict()
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f).get("network")
    if recorded != wanted:
      raise UserError(f"{config.model_dir} holds a prior run of network "
                      f"{recorded}, not {wanted}; use another --model_dir")
  else:
    os.makedirs(config.model_dir, exist_ok=True)
    files.write_json(path, {"network": wanted,
                            "images": config.images})


def _clock(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(config, progress=True, stop_after=None):
  """Trains (or resumes) the prior; exports it at the end if export_dir is set.

  Args:
    config: PriorTrainConfig.
    progress: print a line every log_every steps.
    stop_after: stop after this many steps of this call (a checkpoint is
      written), without exporting: tests and time-boxed runs.

  Returns:
    dict: "step" (the step reached), "loss" (mean of the last log interval),
    "eval" ({sigma: validation PSNR} at the end) and "seconds".
  """
  config = config.validate()
  check_run_dir(config)

  def say(text):
    if progress:
      print(text, flush=True)

  policy = "mixed_bfloat16" if config.mixed_precision else "float32"
  model = config.network.build(dtype=policy, name="prior_denoiser")
  model.build((None, None, None))
  optimizer = keras.optimizers.Adam(learning_rate_schedule(config))
  optimizer.build(model.trainable_variables)
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                   step=step)
  manager = tf.train.CheckpointManager(checkpoint, config.model_dir,
                                       max_to_keep=config.keep_checkpoints)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    say(f"resuming from {manager.latest_checkpoint} (step {int(step)})")
  elif config.init_from:
    _load_weights(model, config)
    say(f"starting from the weights of {config.init_from}")

  train_images, train_procedural = data_lib.load_pool(config.images, "train")
  source = data_lib.PatchSource(train_images, train_procedural, config.patches)
  if config.pairs:
    arrays = {"inputs": [], "targets": [], "sigma": []}
    for path in config.pairs.split(","):
      with files.load_arrays(path, f"pairs {path}") as z:
        for key, values in arrays.items():
          values.append(z[key])
    pairs = data_lib.PairSource(
        *[np.concatenate(arrays[k]) for k in ("inputs", "targets", "sigma")],
        config.patches.patch_size, config.patches.seed)
    source = data_lib.MixedSource(source, pairs, config.pair_fraction,
                                  config.patches.seed)
    say(f"{pairs.num_pairs} pairs of {config.pairs}, "
        f"{config.pair_fraction:g} of the patches")
  test_images, _ = data_lib.load_pool(config.images, "test")
  clean_val, noisy_val = data_lib.validation_set(
      test_images, config.eval_size, EVAL_SIGMAS, seed=config.patches.seed)

  start = int(step)
  remaining = config.steps - start
  if stop_after is not None:
    remaining = min(remaining, int(stop_after))
  dataset = source.dataset(config.batch_size, start, max(remaining, 0))

  @tf.function
  def train_step(batch):
    with tf.GradientTape() as tape:
      denoised = model(batch["noisy"], batch["sigma"])
      loss = loss_value(config, denoised, batch["clean"], batch["sigma"])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    step.assign_add(1)
    return loss

  @tf.function
  def denoise(x, sigma):
    return model(x, sigma)

  def evaluate():
    scores = {}
    for sigma, noisy in noisy_val.items():
      out = denoise(tf.constant(noisy), tf.fill([len(noisy)], sigma)).numpy()
      scores[sigma] = data_lib.psnr(out, clean_val)
    return scores

  train_writer = tf.summary.create_file_writer(
      os.path.join(config.model_dir, "train"))
  eval_writer = tf.summary.create_file_writer(
      os.path.join(config.model_dir, "eval"))
  say(f"prior: {model.count_params()} parameters, {source.num_images} "
      f"training images ({source.num_procedural} procedural), "
      f"patches {config.patches.patch_size}x{config.patches.patch_size}, "
      f"batch {config.batch_size}, steps {start} -> "
      f"{start + max(remaining, 0)} of {config.steps}")

  started = time.time()
  interval_start, interval_losses = time.time(), []
  last_saved, mean_loss = start, None
  for batch in dataset:
    loss = float(train_step(batch))
    interval_losses.append(loss)
    current = int(step)
    if current % config.log_every == 0 or current == config.steps:
      elapsed = time.time() - interval_start
      rate = len(interval_losses) * config.batch_size / max(elapsed, 1e-9)
      mean_loss = float(np.mean(interval_losses))
      lr = float(optimizer.learning_rate)
      with train_writer.as_default(step=current):
        tf.summary.scalar("loss", mean_loss)
        tf.summary.scalar("learning_rate", lr)
        tf.summary.scalar("patches_per_second", rate)
      done = current - start
      eta = (time.time() - started) / max(done, 1) * (config.steps - current)
      say(f"step {current}/{config.steps}  loss {mean_loss:.4g}  lr "
          f"{lr:.2e}  {rate:.1f} patches/s  elapsed "
          f"{_clock(time.time() - started)}  eta {_clock(eta)}")
      interval_start, interval_losses = time.time(), []
    if current % config.eval_every == 0 or current == config.steps:
      _write_eval(eval_writer, current, evaluate(), denoise, clean_val,
                  noisy_val, say)
    if current % config.checkpoint_every == 0:
      manager.save(checkpoint_number=current)
      last_saved = current
  current = int(step)
  if current != last_saved:
    manager.save(checkpoint_number=current)
  scores = evaluate()
  if interval_losses:
    mean_loss = float(np.mean(interval_losses))
  result = {"step": current, "seconds": time.time() - started,
            "loss": mean_loss, "eval": scores}
  if current >= config.steps and config.export_dir:
    export(model, config, config.export_dir, record={
        "step": current, "validation_psnr": {str(k): round(v, 3)
                                             for k, v in scores.items()}})
    say(f"exported to {config.export_dir}")
    if config.ship_dir:
      ship(config.export_dir, config.ship_dir)
      say(f"weights copied to {config.ship_dir}")
  return result


def _load_weights(model, config):
  """Sets `model`'s weights to those of the export `config.init_from`."""
  from ptychonet_tf import prior as prior_lib  # pylint: disable=g-import-not-at-top
  recorded = prior_lib.info(config.init_from).get("network")
  if recorded != config.network.as_dict():
    raise UserError(f"init_from {config.init_from} is a prior of network "
                    f"{recorded}, not {config.network.as_dict()}")
  source = prior_lib.load(config.init_from)
  for variable, value in zip(model.weights, source.weights):
    variable.assign(value)


def _write_eval(writer, current, scores, denoise, clean, noisy, say):
  with writer.as_default(step=current):
    for sigma, value in scores.items():
      tf.summary.scalar(f"psnr/sigma_{sigma:g}", value)
    sigma = max(noisy)
    out = denoise(tf.constant(noisy[sigma][:1]), tf.constant([sigma])).numpy()
    panel = np.concatenate([clean[:1], noisy[sigma][:1], out], axis=2)
    tf.summary.image(f"clean | noisy | denoised (sigma {sigma:g})",
                     np.clip(panel, 0, 1)[..., None], step=current)
  say("validation PSNR: " + ", ".join(f"sigma {s:g}: {v:.2f} dB"
                                      for s, v in scores.items()))


def export(model, config, export_dir, record=None):
  """Writes prior.json, prior.npz and saved_model/ of a trained denoiser.

  Args:
    model: the trained PriorDenoiser.
    config: its PriorTrainConfig (recorded in prior.json).
    export_dir: the folder (created; its files are replaced one by one,
      each written to a temp name first).
    record: extra facts for prior.json (step, validation PSNR).
  """
  os.makedirs(export_dir, exist_ok=True)
  weights = [np.asarray(w.numpy(), np.float32) for w in model.weights]
  names = [w.path.split("/", 1)[-1] for w in model.weights]
  files.save_npz(os.path.join(export_dir, WEIGHTS_FILE),
                 **{f"w{i:03d}": w for i, w in enumerate(weights)})
  info = {"network": config.network.as_dict(), "weights": names,
          "images": config.images, "patch_size": config.patches.patch_size,
          "sigma_max": config.patches.sigma_max, "loss": config.loss,
          "steps": config.steps, "batch_size": config.batch_size}
  if config.init_from:
    info["init_from"] = config.init_from
  if config.pairs:
    info.update(pairs=config.pairs, pair_fraction=config.pair_fraction)
  info.update(record or {})
  # The SavedModel runs in float32 whatever the training precision.
  served = config.network.build(dtype="float32", name="prior_denoiser")
  served.build((None, None, None))
  for variable, value in zip(served.weights, weights):
    variable.assign(value)
  module = tf.Module()
  module.denoiser = served
  module.serve = tf.function(
      lambda x, sigma: {"denoised": served(x, sigma)},
      input_signature=[tf.TensorSpec([None, None, None], tf.float32, "x"),
                       tf.TensorSpec([None], tf.float32, "sigma")])
  tmp = os.path.join(export_dir, SAVED_MODEL_DIR + ".tmp")
  tf.saved_model.save(module, tmp, signatures={"serving_default":
                                               module.serve})
  files.replace_dir(tmp, os.path.join(export_dir, SAVED_MODEL_DIR))
  files.write_json(os.path.join(export_dir, CONFIG_FILE), info)


def ship(export_dir, ship_dir):
  """Copies prior.json and prior.npz of an export to `ship_dir` (atomically)."""
  os.makedirs(ship_dir, exist_ok=True)
  for name in (WEIGHTS_FILE, CONFIG_FILE):
    files.atomic_write(os.path.join(ship_dir, name),
                       lambda tmp, n=name: shutil.copyfile(
                           os.path.join(export_dir, n), tmp))
