"""The custom training loop of PtychoNet (any tf.distribute strategy).

Keras' `model.fit` does not work with MultiWorkerMirroredStrategy in Keras
3.15 (keras-team/keras#20585), so training runs its own loop, the same for
every strategy:

- input: `strategy.distribute_datasets_from_function` over
  `pipeline.make_pattern_dataset(..., input_context=...)`; each worker reads
  its own shards and cuts the scans into single patterns shuffled across
  scans (`shuffle_scans` scans' worth in the buffer); a replica's batch
  holds `batch_size / replicas` scans' worth of patterns, repeated, so
  every worker runs exactly `steps_per_epoch` steps per epoch;
- step: per-pattern loss -> `tf.nn.compute_average_loss` over the global
  batch (batch_size * N patterns) -> gradients all-reduced by the Keras
  optimizer -> Adam update;
- checkpoints: `tf.train.CheckpointManager` at every epoch end (and every
  `checkpoint_secs`), numbered by the global step; a restarted run restores
  the latest one and continues from its step, so a killed run loses at most
  one epoch. Every worker saves (non-chief workers into a scratch folder that
  is deleted), as MultiWorkerMirroredStrategy requires;
- the run directory records its dataset (run.json); a start on another
  dataset, or with other network settings, is refused before anything is
  written, unless `restart` or `fine_tune` says what to do
  (`Trainer.prepare_run_dir`);
- a damaged record ends in a UserError naming its shard
  (`pipeline.naming_damaged_records`), not tf.data's DataLossError;
- TensorBoard (chief only): train/ (loss per step and epoch, learning rate,
  patterns/s) and eval/ (held-out loss, PSNR and SSIM of amplitude and phase,
  image panels) under model_dir.
"""
import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from ptychonet_tf.evaluation import metrics
from ptychonet_tf.data import pipeline
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import network
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import losses
from ptychonet_tf.training import evaluator
from ptychonet_tf.training import run_dir
from ptychonet_tf.training import strategy as strategy_lib

RESULTS_FILE = "results.json"
LOG_EVERY_STEPS = 10


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
  """Builds the model, optimizer, data and checkpoints of one run.

  The model computes in bfloat16 when `config.mixed_precision` (its own
  policy; the global Keras dtype policy is not changed). The Trainer does not
  seed the global random generators: the entry point (cli/train.py) seeds
  Keras with `config.seed` first, and any other caller that wants a
  reproducible initialisation seeds before constructing it. The input order
  is seeded from `config.seed` in any case.

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
    n, (h, w) = self.geometry.num_positions, self.geometry.probe_shape
    self.patterns_per_step = config.batch_size * n
    with strategy.scope():
      self.model = network.build_model(self.network_config, self.geometry)
      self.model(np.zeros([1, n, h, w], np.float32))
      self.optimizer = keras.optimizers.Adam(
          learning_rate=self._learning_rate(), beta_1=config.beta1)
      self.optimizer.build(self.model.patch_network.trainable_variables)
      # The refinement's own variables (momenta, step sizes, corrections)
      # learn at their own rate: its scalars need far larger steps than
      # the network's weights.
      self.refine_optimizer = None
      if self.model.refinement is not None:
        self.refine_optimizer = keras.optimizers.Adam(
            learning_rate=config.refine_learning_rate, beta_1=config.beta1)
        self.refine_optimizer.build(
            self.model.refinement.trainable_variables)
    optimizers = {"optimizer": self.optimizer}
    if self.refine_optimizer is not None:
      optimizers["refine_optimizer"] = self.refine_optimizer
    self.checkpoint = tf.train.Checkpoint(model=self.model, **optimizers)
    if self.is_chief:
      self.checkpoint_dir = config.model_dir
    else:
      self.checkpoint_dir = os.path.join(
          config.model_dir, f".scratch-{self.task_type}-{self.task_id}")
    self._manager = None  # made after prepare_run_dir (which may move files)
    self._start_step = None
    self._probe = tf.constant(self.geometry.probe, tf.complex64)
    self._train_step = self._make_train_step()
    self._refine_step = None  # built when a refinement epoch starts
    # The metrics' region: the refinement loss and the image panels.
    self._lit = metrics.illuminated_region(
        self.geometry.layout, self.geometry.object_shape, self.geometry.probe)
    self._mask = tf.constant(self._lit, tf.float32)

  @property
  def manager(self):
    """The tf.train.CheckpointManager of checkpoint_dir."""
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(
          self.checkpoint, self.checkpoint_dir,
          max_to_keep=self.config.keep_checkpoints, checkpoint_name="ckpt")
    return self._manager

  # Steps.

  def _make_train_step(self):
    model, optimizer = self.model, self.optimizer
    config, probe = self.config, self._probe
    patterns_per_step = self.patterns_per_step

    def step_fn(batch):
      with tf.GradientTape() as tape:
        per_pattern = evaluator.pattern_batch_loss(
            model, batch, config.loss_spec, probe, training=True)
        loss = tf.nn.compute_average_loss(
            per_pattern, global_batch_size=patterns_per_step)
      # The per-pattern loss only reaches the encoder-decoder.
      variables = model.patch_network.trainable_variables
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    return self._distributed(step_fn)

  def _distributed(self, step_fn):
    """A compiled step: `step_fn` on every replica's next batch, losses summed."""
    strategy = self.strategy

    @tf.function
    def step(iterator):
      per_replica = strategy.run(step_fn, args=(next(iterator),))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                             axis=None)

    return step

  def _make_refine_step(self):
    """The end-to-end step of the refinement epochs: whole scans, final object."""
    model, optimizer = self.model, self.optimizer
    refine_optimizer = self.refine_optimizer
    config, probe, mask = self.config, self._probe, self._mask
    # The network learns in these epochs only on request
    # (TrainConfig.refine_train_network; see docs/training.md).
    network = (model.patch_network.trainable_variables
               if config.refine_train_network else [])
    refinement = model.refinement.trainable_variables

    def step_fn(batch):
      with tf.GradientTape() as tape:
        # BatchNorm in inference mode: batches of whole scans would pull its
        # statistics away from those of the mixed pattern batches.
        per_scan, _ = evaluator.scan_batch_loss(
            model, batch, config.loss_spec, probe, False, mask)
        loss = tf.nn.compute_average_loss(
            per_scan, global_batch_size=config.scan_batch_size)
      grads = tape.gradient(loss, network + refinement)
      if network:
        optimizer.apply_gradients(zip(grads[:len(network)], network))
      else:
        # optimizer.iterations is the run's step count (checkpoints,
        # resuming): it counts these steps too.
        optimizer.iterations.assign_add(1)
      refine_optimizer.apply_gradients(zip(grads[len(network):], refinement))
      return loss

    return self._distributed(step_fn)

  def _learning_rate(self):
    """The network's learning rate: a float or a schedule of the step."""
    config = self.config
    if config.lr_schedule == "cosine":
      # A function of optimizer.iterations, which checkpoints keep: a
      # resumed run continues the same curve.
      return keras.optimizers.schedules.CosineDecay(
          config.learning_rate, config.epochs * self.steps_per_epoch)
    return config.learning_rate

  def is_refine_epoch(self, epoch):
    """Whether 0-based `epoch` trains end to end on whole scans."""
    return bool(self.model.refine_steps) and epoch >= self.config.epochs

  def epoch_steps(self, epoch):
    """Steps of 0-based `epoch` (refinement epochs may be shorter)."""
    if self.is_refine_epoch(epoch) and self.config.refine_steps_per_epoch:
      return self.config.refine_steps_per_epoch
    return self.steps_per_epoch

  def epoch_start(self, epoch):
    """The step count at which 0-based `epoch` starts."""
    return sum(self.epoch_steps(e) for e in range(epoch))

  def epoch_at(self, step):
    """The 0-based epoch that `step` lies in (total_epochs when done)."""
    epoch = 0
    while (epoch < self.config.total_epochs and
           self.epoch_start(epoch + 1) <= step):
      epoch += 1
    return epoch

  def train_dataset(self, epoch):
    """The distributed, repeated train input of one epoch (seeded by epoch)."""
    config = self.config
    seed = config.seed * 100003 + epoch
    refine = self.is_refine_epoch(epoch)

    def dataset_fn(input_context):
      batch = input_context.get_per_replica_batch_size(
          config.scan_batch_size if refine else config.batch_size)
      if refine:
        return pipeline.make_dataset(
            config.data_dir, "train", batch, shuffle=True, seed=seed,
            repeat=True, input_context=input_context, drop_remainder=True,
            verify=False)
      return pipeline.make_pattern_dataset(
          config.data_dir, "train",
          batch,
          seed=seed, repeat=True, input_context=input_context,
          shuffle_scans=config.shuffle_scans, drop_remainder=True,
          verify=False)

    return self.strategy.distribute_datasets_from_function(dataset_fn)

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  # Checkpoints.

  def restore(self):
    """Restores the latest checkpoint of model_dir; returns its step (0 if none)."""
    path = run_dir.latest_checkpoint(self.config.model_dir)
    if path is None:
      return 0
    try:
      status = self.checkpoint.read(path)
      status.assert_existing_objects_matched()
      status.expect_partial()  # save_counter: not needed
    except (tf.errors.OpError, ValueError, AssertionError):
      raise UserError(
          f"checkpoint {path} does not fit the network these flags build "
          f"(other --base_channels, --depth or --max_channels?); use the flags "
          f"in {run_dir.FLAGS_FILE} there, a new --model_dir, or --restart")
    return self.step

  def _require_pattern_size(self, there, flag, what):
    """Raises UserError unless the patterns `what` (e.g. "the run in DIR
    was trained on") of size `there` ([h, w]; None: unknown, accepted) are
    this dataset's."""
    shape = list(self.geometry.probe_shape)
    if there and list(there) != shape:
      raise UserError(
          f"{flag}: {what} {there[0]}x{there[1]} patterns, "
          f"{self.config.data_dir} has {shape[0]}x{shape[1]} (another "
          f"geometry), so its weights do not fit; use a new --model_dir")

  def _load_weights(self, path, recorded, flag="--fine_tune", source=None):
    """Reads only the model's weights of checkpoint `path` (fine-tuning;
    `flag` and `source`, the run directory, name the request in errors)."""
    source = source or self.config.model_dir
    geometry = recorded["geometry"] if recorded else None
    self._require_pattern_size((geometry or {}).get("probe_shape"), flag,
                               f"the run in {source} was trained on")
    try:
      status = tf.train.Checkpoint(model=self.model).read(path)
      status.assert_existing_objects_matched()
      status.expect_partial()  # the optimizer starts afresh
    except (tf.errors.OpError, ValueError, AssertionError):
      raise UserError(
          f"{flag}: checkpoint {path} does not fit the network these "
          f"flags build (other --base_channels, --depth, --max_channels or "
          f"refinement flags than its {run_dir.FLAGS_FILE}?)")

  def _init_from(self):
    """Loads the weights of config.init_from (a run's latest checkpoint, or a
    SavedModel export); returns the run.json entry that records them."""
    source = self.config.init_from
    if not os.path.isdir(source):
      raise UserError(f"--init_from={source} is not a directory; expected "
                      f"the --model_dir of an earlier training run or a "
                      f"SavedModel export")
    checkpoint = run_dir.latest_checkpoint(source)
    if checkpoint is None:
      if export_lib.is_saved_model(source):
        return self._init_from_saved_model(source)
      raise UserError(f"--init_from={source} holds no checkpoint and no "
                      f"SavedModel; expected the --model_dir of an earlier "
                      f"training run or an --export_dir")
    recorded_run = run_dir.read_run_file(source)
    recorded = recorded_run["dataset"] if recorded_run else None
    self._load_weights(checkpoint, recorded, "--init_from", source)
    return {"run": source, "checkpoint": checkpoint, "dataset": recorded,
            "step": run_dir.checkpoint_step(checkpoint)}

  def _init_from_saved_model(self, source):
    """Copies the weights of the SavedModel in `source` (an --export_dir or
    one version of it) into the model; returns the run.json entry."""
    path, probe_shape, weights = export_lib.read_weights(source)
    self._require_pattern_size(probe_shape, "--init_from",
                               f"the SavedModel {path} takes")
    mine = self.model.variables
    fits = len(mine) == len(weights) and all(
        tuple(v.shape) == w.shape for v, w in zip(mine, weights))
    if not fits:
      raise UserError(
          f"--init_from: the SavedModel {path} does not fit the network "
          f"these flags build (other --base_channels, --depth, "
          f"--max_channels or refinement flags; an export with "
          f"--keep_refine_steps keeps fewer steps than --refine_steps)")
    for variable, value in zip(mine, weights):
      variable.assign(value)
    version = os.path.basename(os.path.normpath(path))
    return {"run": source, "saved_model": path, "dataset": None,
            "step": int(version) if version.isdigit() else None}

  def prepare_run_dir(self):
    """Checks model_dir against this run, then readies it; returns the start step.

    First the checks, which write nothing, so a refused start leaves the run
    directory as it was. Refused (UserError):
    - a model_dir whose run.json records another dataset, unless
      `config.restart` or `config.fine_tune`;
    - on the same dataset, other network settings than its model.json, or a
      checkpoint that does not fit;
    - `fine_tune` where the weights cannot fit (another pattern size, width
      or depth), or model_dir holds no checkpoint.
    A run directory from before run.json is adopted (unless its geometry.npz
    is not the dataset's). The latest checkpoint is restored (`fine_tune`:
    only the model's weights; steps count from 0). Then the chief moves an
    old run to model_dir/previous-<time>/ (`restart`, `fine_tune`) and
    records the dataset in run.json. `train` calls this first; cli/train.py
    calls it before it writes flags.txt. Idempotent.
    """
    if self._start_step is not None:
      return self._start_step
    config = self.config
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
      raise UserError(f"model_dir {model_dir} is a file; expected a directory")
    current = run_dir.dataset_record(self.info)
    partial = run_dir.interrupted_move(model_dir)
    if partial and not config.restart:
      raise UserError(f"model_dir {model_dir} holds {partial}, an old run "
                      f"whose move aside was interrupted; re-run with "
                      f"--restart to finish it (nothing is deleted)")
    recorded_run = run_dir.read_run_file(model_dir)
    recorded = recorded_run["dataset"] if recorded_run else None
    checkpoint = run_dir.latest_checkpoint(model_dir)
    stored_model = run_dir.read_model_file(model_dir)
    notes, extra = [], {}
    move = record = False
    start_step = 0
    # A run this --init_from started resumes like any other (the same
    # command after a kill); one killed before its first checkpoint starts
    # again from the source's weights.
    same_init = bool(config.init_from) and (recorded_run or {}).get(
        "initialized_from", {}).get("run") == config.init_from
    if config.init_from and (config.restart or not same_init or
                             checkpoint is None):
      if not config.restart and not same_init and (
          recorded is not None or checkpoint is not None or
          stored_model is not None):
        raise UserError(
            f"--init_from starts a new run, but model_dir {model_dir} holds "
            f"one; use a new --model_dir, or --restart to move it aside")
      extra["initialized_from"] = self._init_from()
      move = config.restart and (bool(run_dir.run_entries(model_dir)) or
                                 partial is not None)
      record = True
      source = extra["initialized_from"]
      weights = (f"the SavedModel {source['saved_model']}"
                 if "saved_model" in source else
                 f"step {source['step']} of {config.init_from}")
      notes.append(f"starting from the weights of {weights}, at step 0")
    elif config.restart:
      move = bool(run_dir.run_entries(model_dir)) or partial is not None
      record = True
    elif recorded is None and checkpoint is None and stored_model is None:
      if config.fine_tune:
        raise UserError(f"--fine_tune: model_dir {model_dir} holds no "
                        f"checkpoint to start from")
      record = True  # a new run
    else:
      if recorded is not None:
        differences = run_dir.dataset_differences(recorded, current)
      else:  # from before run.json: adopt it if its geometry is this one's
        differences = run_dir.older_run_differences(model_dir, current)
      if not differences:
        if recorded is None:
          notes.append(f"note: model_dir {model_dir} has no "
                       f"{run_dir.RUN_FILE} (an older run); recording "
                       f"{config.data_dir} as its dataset")
          record = True
        if stored_model is not None:
          network = run_dir.network_differences(stored_model,
                                                self.model.get_config())
          if network:
            raise UserError(
                f"model_dir {model_dir} was trained with other network "
                f"settings ({'; '.join(network[:3])}); use the flags in its "
                f"{run_dir.FLAGS_FILE}, a new --model_dir, or --restart")
        start_step = self.restore()
      elif config.fine_tune:
        if checkpoint is None:
          raise UserError(f"--fine_tune: model_dir {model_dir} holds no "
                          f"checkpoint to start from")
        self._load_weights(checkpoint, recorded)
        move = record = True
        extra["fine_tuned_from"] = {
            "dataset": recorded, "step": run_dir.checkpoint_step(checkpoint)}
        notes.append(
            f"fine-tuning the weights of step "
            f"{run_dir.checkpoint_step(checkpoint)} (trained on "
            f"{(recorded or {}).get('data_dir', 'another dataset')}) on "
            f"{config.data_dir}, from step 0")
      else:
        where = (recorded or {}).get("data_dir") or "another dataset"
        more = ", ..." if len(differences) > 2 else ""
        raise UserError(
            f"model_dir {model_dir} holds a run on another dataset ({where}; "
            f"{', '.join(differences[:2])}{more}); use a new --model_dir, "
            f"--fine_tune to start from its weights, or --restart to start "
            f"over (both keep the old run in {run_dir.PREVIOUS_PREFIX}<time>/)")
    if move and strategy_lib.num_workers(self.strategy) > 1:
      raise UserError("--restart and --fine_tune move the old run aside, "
                      "which needs a single worker: start with "
                      "--distribution=mirrored or none, then continue with "
                      "multi_worker")
    # The checks passed: from here on, files change.
    if self.is_chief:
      if move:
        aside = run_dir.move_run_aside(model_dir)
        if aside:
          notes.append(f"moved the old run to {aside}")
          if "fine_tuned_from" in extra:
            extra["fine_tuned_from"]["checkpoint"] = os.path.join(
                aside, os.path.basename(checkpoint))
      if record:
        run_dir.write_run_file(model_dir, current, **extra)
    for note in notes:
      _log(config, note)
    self._start_step = start_step
    return start_step

  def save(self):
    path = self.manager.save(checkpoint_number=self.step)
    if not self.is_chief:
      shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
    return path

  # The loop.

  def evaluator(self):
    test = pipeline.make_dataset(self.config.data_dir, "test",
                                 max(1, self.config.batch_size), shuffle=False,
                                 verify=False)
    return evaluator.Evaluator(self.model, test, self.geometry,
                                loss=self.config.loss_spec,
                                objects=self.info.objects,
                                max_scans=self.config.eval_scans,
                                num_images=self.config.num_images,
                                data_dir=self.config.data_dir, split="test")

  def _write_eval(self, writer, scalars, images, step):
    mask = self._lit
    with writer.as_default(step=step):
      tf.summary.scalar("loss", scalars["loss"])
      tf.summary.scalar("data_misfit", scalars["misfit"])
      for name in evaluator.METRIC_NAMES:
        if np.isfinite(scalars[name]):  # none without objects
          tf.summary.scalar(name, scalars[name])
      tf.summary.scalar("inference_scans_per_second",
                        scalars["scans_per_second"])
      if len(images["truth"]):
        panels = evaluator.image_panels(
            images["truth"], images["estimate"],
            self.network_config.amplitude_range,
            self.network_config.phase_range, mask)
        for name, panel in panels.items():
          tf.summary.image(f"{name} (truth | estimate | error)", panel,
                           max_outputs=len(panel))
    writer.flush()

  def train(self):
    """Runs (or resumes) training; returns the final held-out metrics (chief)."""
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
    _log(config, f"training on {self.info.counts['train']} scans of {n} "
         f"{h}x{w} patterns, {self.strategy.num_replicas_in_sync} replica(s), "
         f"batches of {self.patterns_per_step} patterns ({config.batch_size} "
         f"scans' worth, mixed across scans), {config.epochs} epochs of "
         f"{self.steps_per_epoch} steps"
         + (f", then {config.total_epochs - config.epochs} end-to-end epochs "
            f"of {self.epoch_steps(config.epochs)} steps on whole scans "
            f"through {self.model.refine_steps} refinement steps"
            if config.total_epochs > config.epochs else "")
         + (f"; resuming at step {start_step}" if start_step else ""))
    evaluator = self.evaluator() if self.is_chief else None
    scalars = None
    if (evaluator is not None and start_step == 0 and
        (config.init_from or config.fine_tune)):
      # The starting point of a fine-tune, to compare the epochs with.
      start_scalars, _ = evaluator()
      _log(config, "before training, " + format_metrics(start_scalars))
    last_save = time.time()
    for epoch in range(self.epoch_at(start_step), config.total_epochs):
      steps = self.epoch_steps(epoch)
      first = self.step - self.epoch_start(epoch)
      with pipeline.naming_damaged_records(config.data_dir, "train"):
        iterator = iter(self.train_dataset(epoch))
      progbar = keras.utils.Progbar(
          steps, verbose=1 if config.verbose else 0,
          stateful_metrics=["patterns/s"])
      if config.verbose:
        print(f"epoch {epoch + 1}/{config.total_epochs}"
              + (" (end to end, whole scans)" if self.is_refine_epoch(epoch)
                 else ""), flush=True)
      train_step = self._train_step
      if self.is_refine_epoch(epoch):
        if self._refine_step is None:
          self._refine_step = self._make_refine_step()
        train_step = self._refine_step
      start, losses_ = time.perf_counter(), []
      for i in range(first, steps):
        with pipeline.naming_damaged_records(config.data_dir, "train"):
          loss = float(train_step(iterator))
        losses_.append(loss)
        rate = (i + 1 - first) * self.patterns_per_step / (
            time.perf_counter() - start)
        progbar.update(i + 1, [("loss", loss), ("patterns/s", rate)])
        step = self.step
        if self.is_chief and step % LOG_EVERY_STEPS == 0:
          with train_writer.as_default(step=step):
            tf.summary.scalar("loss_per_step", loss)
        if (config.checkpoint_secs and i + 1 < steps and
            time.time() - last_save > config.checkpoint_secs):
          self.save()
          last_save = time.time()
      seconds = time.perf_counter() - start
      self.save()
      last_save = time.time()
      step = self.step
      rate = len(losses_) * self.patterns_per_step / max(seconds, 1e-9)
      if not self.is_chief:
        continue
      with train_writer.as_default(step=step):
        tf.summary.scalar("loss", float(np.mean(losses_)))
        tf.summary.scalar("learning_rate",
                          float(np.asarray(self.optimizer.learning_rate)))
        tf.summary.scalar("patterns_per_second", rate)
        tf.summary.scalar("epoch", epoch + 1)
      train_writer.flush()
      scalars, images = evaluator()
      self._write_eval(eval_writer, scalars, images, step)
      _log(config, f"epoch {epoch + 1}: train loss {np.mean(losses_):.5f}, "
           f"{rate:.0f} patterns/s; " + format_metrics(scalars))
    if not self.is_chief:
      return None
    if scalars is None:  # Nothing left to train: evaluate the checkpoint.
      scalars, images = evaluator()
      self._write_eval(eval_writer, scalars, images, self.step)
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
    if self.restore() == 0 and run_dir.latest_checkpoint(
        self.config.model_dir) is None:
      raise UserError(f"model_dir {self.config.model_dir} holds no checkpoint "
                      f"to evaluate; train first")
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
