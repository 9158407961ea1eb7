"""A training run of PtychoNet (any tf.distribute strategy): `Trainer`.

Keras' `model.fit` does not work with MultiWorkerMirroredStrategy in Keras
3.15 (keras-team/keras#20585), so training runs its own loop, the same for
every strategy. A run joins four parts:

- the task (`training.task.PtychoTask`): the model, optimizers, global step
  and compiled steps, the input of an epoch, the held-out evaluator;
- the loop (`training.loop`): epochs of steps from the global step,
  checkpoints at every epoch end and every `checkpoint_secs`, train
  summaries; a restarted run restores the latest checkpoint and continues
  from its step, so a killed run loses at most one epoch. Every worker
  saves (non-chief workers into a scratch folder that is deleted), as
  MultiWorkerMirroredStrategy requires;
- the run directory (`training.run_dir`): its lock, and the rules of a
  start (resume, refuse, move an old run aside, record the dataset in
  run.json) before anything is written;
- warm start (`training.warm_start`): --init_from and --fine_tune weights.

A damaged record ends in a UserError naming its shard
(`pipeline.naming_damaged_records`); TensorBoard (chief only) gets train/
and eval/ (held-out loss, PSNR and SSIM of amplitude and phase, image
panels) under model_dir.
"""
import contextlib
import dataclasses
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from ptychonet_tf.data import pipeline
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import losses
from ptychonet_tf.training import loop
from ptychonet_tf.training import run_dir
from ptychonet_tf.training import strategy as strategy_lib
from ptychonet_tf.training import task as task_lib
from ptychonet_tf.training import warm_start
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

RESULTS_FILE = run_dir.RESULTS_FILE


def _log(config, message):
  if config.verbose:
    print(message, flush=True)


def output_ranges(info, network_config):
  """The network's amplitude and phase ranges from the dataset's settings.

  A dataset written by tools/make_tfrecords.py records its object settings;
  those win over `network_config` (phase_only data get a narrow amplitude
  range around the constant amplitude).
  """
  try:
    with open(os.path.join(info.data_dir, "dataset.json")) as f:
      obj = json.load(f)["identity"]["simulation"]["object"]
  except (OSError, ValueError, KeyError, TypeError):
    return network_config
  if obj.get("mode") == "phase_only":
    c = float(obj["constant_amplitude"])
    amplitude_range = (0.9 * c, 1.1 * c) if c > 0 else (0.0, 1e-3)
  else:
    amplitude_range = (float(obj["amp_min"]), float(obj["amp_max"]))
  phase_range = (float(obj["phase_min"]), float(obj["phase_max"]))
  return dataclasses.replace(network_config, amplitude_range=amplitude_range,
                             phase_range=phase_range)


class Trainer:
  """One training run: the dataset's checks, the task, the run directory.

  The Trainer does not seed the global random generators: the entry point
  (cli/train.py) seeds Keras with `config.seed` first, and any other caller
  that wants a reproducible initialisation seeds before constructing it. The
  input order is seeded from `config.seed` in any case.

  Args:
    config: TrainConfig.
    strategy: a tf.distribute.Strategy (see training.strategy).
  """

  def __init__(self, config, strategy):
    self.config = config.validate()
    self.strategy = strategy
    info = pipeline.load_dataset_info(config.data_dir)
    self.info = info
    self.geometry = info.geometry
    if not info.objects and losses.uses_objects(config.loss):
      raise UserError(f"dataset {config.data_dir} holds measured scans "
                      f"without objects, so --loss={config.loss} has nothing "
                      f"to compare with; train it with --loss=physics")
    if info.family and config.network.refine_steps and (
        config.scan_batch_size != 1):
      raise UserError(f"dataset {config.data_dir} is a family of geometries: "
                      f"its refinement epochs take one scan per step; train "
                      f"it with --refine_batch_size=1")
    replicas = strategy.num_replicas_in_sync
    if config.scan_batch_size % replicas:
      raise UserError(f"refine_batch_size={config.scan_batch_size} is not "
                      f"divisible by the {replicas} replicas")
    if config.batch_size % replicas:
      raise UserError(f"batch_size={config.batch_size} is not divisible by "
                      f"the {replicas} replicas")
    self.steps_per_epoch = (config.steps_per_epoch or
                            info.counts["train"] // config.batch_size)
    if self.steps_per_epoch < 1:
      raise UserError(f"dataset {config.data_dir} has {info.counts['train']} "
                      f"train scans, fewer than batch_size="
                      f"{config.batch_size}")
    if info.counts.get("test", 0) < 1:
      raise UserError(f"dataset {config.data_dir} has no test scans to "
                      f"evaluate on; write it with tools/make_tfrecords.py "
                      f"--num_test >= 1")
    self.task_type, self.task_id, self.is_chief = strategy_lib.task_info(
        strategy)
    workers = strategy_lib.num_workers(strategy)
    if workers > 1 and len(info.shards["train"]) < workers:
      raise UserError(f"dataset {config.data_dir} has "
                      f"{len(info.shards['train'])} train shards, fewer than "
                      f"the {workers} workers; rewrite it with more "
                      f"--num_shards")
    # The precision is the model's own (TrainConfig.mixed_precision); the
    # global Keras policy and random seed are the entry point's business.
    self.network_config = dataclasses.replace(
        output_ranges(info, config.network),
        mixed_precision=config.mixed_precision)
    self.network_config.validate(self.geometry.probe_shape)
    self.task = task_lib.PtychoTask(config, info, self.network_config,
                                    strategy, self.steps_per_epoch)
    self.model = self.task.model
    self.optimizer = self.task.optimizer
    self.global_step = self.task.global_step
    self.patterns_per_step = self.task.patterns_per_step
    self.schedule = loop.EpochSchedule(
        self.task.epoch_steps(e) for e in range(config.total_epochs))
    if self.is_chief:
      self.checkpoint_dir = config.model_dir
    else:
      self.checkpoint_dir = os.path.join(
          config.model_dir, f".scratch-{self.task_type}-{self.task_id}")
    self._manager = None  # made after prepare_run_dir (which may move files)
    self._start_step = None

  @property
  def manager(self):
    """The tf.train.CheckpointManager of checkpoint_dir."""
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(
          self.task.checkpoint, self.checkpoint_dir,
          max_to_keep=self.config.keep_checkpoints, checkpoint_name="ckpt")
    return self._manager

  @property
  def step(self):
    """The global step."""
    return self.task.step

  def train_dataset(self, epoch):
    """The distributed, repeated train input of one epoch."""
    return self.task.train_dataset(epoch)

  def is_refine_epoch(self, epoch):
    return self.task.is_refine_epoch(epoch)

  def epoch_steps(self, epoch):
    return self.task.epoch_steps(epoch)

  def epoch_at(self, step):
    return self.schedule.epoch_at(step)

  def evaluator(self):
    return self.task.evaluator()

  # Checkpoints.

  def restore(self, path=None):
    """Restores checkpoint `path` (default: the latest of model_dir);
    returns its global step (0 if there is none)."""
    path = path or run_dir.latest_checkpoint(self.config.model_dir)
    if path is None:
      return 0
    try:
      status = self.task.checkpoint.read(path)
      status.assert_existing_objects_matched()
      status.expect_partial()  # save_counter: not needed
    except run_dir.CHECKPOINT_ERRORS as e:
      try:
        names = [name for name, _ in tf.train.list_variables(path)]
      except run_dir.CHECKPOINT_ERRORS:
        names = None
      if names is None or isinstance(e, run_dir.DAMAGED_CHECKPOINT_ERRORS):
        raise UserError(
            f"checkpoint {path} cannot be read (truncated or damaged); "
            f"remove it to resume from the one before, or start over with "
            f"--restart") from None
      if not any(name.startswith("step/") for name in names):
        raise UserError(
            f"checkpoint {path} holds no step counter (an older release "
            f"wrote it); continue it with that release, or start over with "
            f"--restart or a new --model_dir") from None
      raise UserError(
          f"checkpoint {path} does not fit the network these flags build "
          f"(other --base_channels, --depth or --max_channels?); use the "
          f"flags in {run_dir.FLAGS_FILE} there, a new --model_dir, or "
          f"--restart") from None
    return self.step

  def save(self):
    path = self.manager.save(checkpoint_number=self.step)
    if not self.is_chief:
      shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
    return path

  # The run directory.

  def prepare_run_dir(self, dry_run=False):
    """Checks model_dir against this run, then readies it; returns the start step.

    The rules are `run_dir.plan`'s; then the weights are loaded (this run's
    latest checkpoint, or --init_from's or --fine_tune's through
    `warm_start.load`), which may still refuse (weights that do not fit).
    Up to there nothing is written, so a refused start leaves model_dir as
    it was, and `dry_run` stops there. Then the chief moves an old run
    aside and records the dataset (`run_dir.apply`). Idempotent.
    """
    if self._start_step is not None:
      return self._start_step
    config = self.config
    current = run_dir.dataset_record(self.info)
    start = run_dir.plan(config.model_dir, current, self.model.get_config(),
                         restart=config.restart, fine_tune=config.fine_tune,
                         init_from=config.init_from)
    if start.move_aside and strategy_lib.num_workers(self.strategy) > 1:
      raise UserError("--restart and --fine_tune move the old run aside, "
                      "which needs a single worker: start with "
                      "--distribution=mirrored or none, then continue with "
                      "multi_worker")
    notes, source, step = list(start.notes), None, 0
    if start.resume:
      step = self.restore(start.resume)
    elif start.weights_from:
      source = warm_start.load(self.model, start.weights_from,
                               start.weights_flag, config.data_dir,
                               start.weights_dataset)
      notes.append(warm_start.describe(start.weights_flag, source,
                                       config.data_dir))
    if dry_run:
      return step
    # The checks passed: from here on, files change.
    if self.is_chief:
      notes += run_dir.apply(config.model_dir, start, current, source)
    for note in notes:
      _log(config, note)
    self._start_step = step
    return step

  def _lock(self):
    """The run directory's lock (the chief's; workers share its folder)."""
    if self.is_chief:
      return run_dir.locked(self.config.model_dir)
    return contextlib.nullcontext()

  # The loop.

  def train(self):
    """Runs (or resumes) training; returns the final held-out metrics (chief)."""
    with self._lock():
      return self._train()

  def _train(self):
    config = self.config
    start_step = self.prepare_run_dir()
    os.makedirs(config.model_dir, exist_ok=True)
    if self.is_chief:
      run_dir.save_model_files(config.model_dir, self.model, self.geometry)
      train_writer = tf.summary.create_file_writer(
          os.path.join(config.model_dir, "train"))
      eval_writer = tf.summary.create_file_writer(
          os.path.join(config.model_dir, "eval"))
    else:
      train_writer = eval_writer = tf.summary.create_noop_writer()
    n, (h, w) = self.geometry.num_positions, self.geometry.probe_shape
    scans = (f"scans of their own probes and layouts (a family; nominal "
             f"{n} positions) of {h}x{w} patterns" if self.info.family else
             f"scans of {n} {h}x{w} patterns")
    _log(config, f"training on {self.info.counts['train']} {scans}, "
         f"{self.strategy.num_replicas_in_sync} replica(s), "
         f"batches of {self.patterns_per_step} patterns ({config.batch_size} "
         f"scans' worth, mixed across scans), {config.epochs} epochs of "
         f"{self.steps_per_epoch} steps"
         + (f", then {config.total_epochs - config.epochs} end-to-end epochs "
            f"of {self.epoch_steps(config.epochs)} steps on whole scans "
            f"through {self.model.refine_steps} refinement steps"
            if config.total_epochs > config.epochs else "")
         + (f"; resuming at step {start_step}" if start_step else ""))
    held_out = self.evaluator() if self.is_chief else None
    if (held_out is not None and start_step == 0 and
        (config.init_from or config.fine_tune)):
      # The starting point of a fine-tune, to compare the epochs with.
      start_scalars, _ = held_out()
      _log(config, "before training, " + format_metrics(start_scalars))
    last = {}

    def after_epoch(epoch, mean_loss, rate):
      line = (f"epoch {epoch + 1}: train loss {mean_loss:.5f}, "
              f"{rate:.0f} patterns/s")
      if ((epoch + 1) % config.eval_every and
          epoch + 1 < config.total_epochs):
        _log(config, line + f" (held-out evaluation every "
             f"{config.eval_every} epochs)")
        return
      scalars, images = held_out()
      self.task.write_eval(eval_writer, scalars, images, self.step)
      last["scalars"] = scalars
      _log(config, line + "; " + format_metrics(scalars))

    def title(epoch):
      return (f"epoch {epoch + 1}/{config.total_epochs}"
              + (" (end to end, whole scans)" if self.is_refine_epoch(epoch)
                 else ""))

    hooks = loop.Hooks(
        dataset=self.train_dataset, step=self.task.train_step, title=title,
        after_epoch=after_epoch,
        epoch_scalars=lambda: {"learning_rate": self.task.learning_rate()},
        guard=lambda: pipeline.naming_damaged_records(config.data_dir,
                                                      "train"))
    loop.run_epochs(self.schedule, self.global_step, hooks, self.save,
                    writer=train_writer,
                    checkpoint_secs=config.checkpoint_secs,
                    items_per_step=self.patterns_per_step,
                    items_name="patterns", is_chief=self.is_chief,
                    verbose=config.verbose)
    if not self.is_chief:
      return None
    scalars = last.get("scalars")
    if scalars is None:  # Nothing left to train: evaluate the checkpoint.
      scalars, images = held_out()
      self.task.write_eval(eval_writer, scalars, images, self.step)
    scalars = dict(scalars, step=self.step)
    files.write_text(os.path.join(config.model_dir, RESULTS_FILE),
                     json.dumps(scalars, indent=1))
    _log(config, "final " + format_metrics(scalars))
    if config.export:
      path = export_lib.export_saved_model(
          self.model, self.geometry.probe,
          config.export_dir or os.path.join(config.model_dir, "export"),
          max(self.step, 1))
      _log(config, f"exported SavedModel {path}")
    return scalars

  def evaluate(self):
    """Evaluates the latest checkpoint (eval-only mode); returns the metrics."""
    if run_dir.latest_checkpoint(self.config.model_dir) is None:
      raise UserError(f"model_dir {self.config.model_dir} holds no checkpoint "
                      f"to evaluate; train first")
    self.restore()
    scalars, _ = self.evaluator()()
    scalars = dict(scalars, step=self.step)
    _log(self.config, "eval " + format_metrics(scalars))
    return scalars


def format_metrics(scalars):
  """One line: held-out loss, data misfit, PSNR and SSIM of amplitude and
  phase."""
  line = (f"held-out ({scalars['scans']} scans) loss {scalars['loss']:.5f}, "
          f"data misfit {scalars['misfit']:.4g}")
  if not np.isfinite(scalars["amplitude_psnr"]):  # measured: no objects
    return line
  return (line + f", amplitude PSNR {scalars['amplitude_psnr']:.2f} dB SSIM "
          f"{scalars['amplitude_ssim']:.4f}, phase PSNR "
          f"{scalars['phase_psnr']:.2f} dB SSIM {scalars['phase_ssim']:.4f}")


def train(config, strategy=None):
  """Trains (or resumes) a PtychoNet; returns the held-out metrics (chief) or None."""
  strategy = strategy or tf.distribute.get_strategy()
  return Trainer(config, strategy).train()
