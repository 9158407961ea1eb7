"""The PtychoNet training task: model, optimizers, losses, input and steps.

One `PtychoTask` per run holds what is PtychoNet's in a training run (the
loop around it is `training.loop`, the run directory's rules are
`training.run_dir`):

- the model (`network.build_model`) and its Adam optimizers: the network's
  (`learning_rate`, constant or a half cosine of the global step), the
  refinement's own variables' (`refine_learning_rate`) and, with a trained
  prior (`refine_prior_train`), its denoiser's (`refine_prior_learning_rate`);
- `global_step`, a tf.Variable counted by every step, which the checkpoint
  holds with the model and the optimizers;
- the pattern step (per-pattern loss -> `tf.nn.compute_average_loss` over the
  global batch of batch_size * N patterns -> gradients all-reduced by the
  Keras optimizer -> Adam update of the encoder-decoder) and the refinement
  step (whole scans through the refinement steps, the final object's loss);
- the train input of an epoch (`pipeline.make_pattern_dataset`, or whole
  scans in refinement epochs, through `distribute_datasets_from_function`)
  and the held-out evaluator with its TensorBoard summaries.
"""
import sys

import keras
import numpy as np
import tensorflow as tf

from ptychonet_tf.data import pipeline
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import network
from ptychonet_tf.training import evaluator as evaluator_lib


def refine_variables(refinement):
  """The trainable variables of an `UnrolledRefinement`, split by optimizer:
  (its own: step sizes, momenta, corrections, noise levels, filter; the
  prior's denoisers' weights, non-empty only with prior_train)."""
  denoiser = [v for layer in refinement.denoisers
              for v in layer.trainable_variables]
  ids = {id(v) for v in denoiser}
  own = [v for v in refinement.trainable_variables if id(v) not in ids]
  return own, denoiser


def skip_if_not_finite(grads):
  """`grads`, or all zeros where any is NaN or infinite (said on stderr).

  Through hundreds of unrolled steps one gradient can overflow; applied, it
  would make every learned scalar NaN and the model's output meaningless
  for good. A step whose gradient is not finite contributes nothing: Adam
  gets zeros (its moments decay one step, and what momentum they hold from
  earlier steps still moves the weights a little)."""
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                          for g in grads if g is not None])
  tf.cond(finite, tf.no_op, lambda: tf.print(
      "warning: a refinement step's gradient is not finite; the step is "
      "skipped", output_stream=sys.stderr))
  return [None if g is None else tf.where(finite, g, tf.zeros_like(g))
          for g in grads]


class PtychoTask:
  """The model, optimizers and compiled steps of one training run.

  Built under `strategy.scope()`; the model computes in bfloat16 when
  `network_config.mixed_precision` (its own policy). The caller seeds Keras
  first if it wants a reproducible initialisation.

  Args:
    config: TrainConfig.
    info: the dataset's pipeline.DatasetInfo.
    network_config: the NetworkConfig to build (ranges of the dataset,
      precision of the run).
    strategy: a tf.distribute.Strategy.
    steps_per_epoch: steps of a pattern epoch (the cosine schedule's length
      is epochs x steps_per_epoch).
  """

  def __init__(self, config, info, network_config, strategy,
               steps_per_epoch):
    self.config = config
    self.info = info
    self.geometry = info.geometry
    self.network_config = network_config
    self.strategy = strategy
    self.steps_per_epoch = steps_per_epoch
    n, (h, w) = self.geometry.num_positions, self.geometry.probe_shape
    self.patterns_per_step = config.batch_size * n
    with strategy.scope():
      self.global_step = tf.Variable(
          0, dtype=tf.int64, trainable=False, name="step",
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.model = network.build_model(network_config, self.geometry)
      self.model(np.zeros([1, n, h, w], np.float32))
      self.optimizer = keras.optimizers.Adam(
          learning_rate=self._learning_rate(), beta_1=config.beta1)
      self.optimizer.build(self.model.patch_network.trainable_variables)
      # The refinement's own variables (momenta, step sizes, corrections)
      # learn at their own rate: its scalars need far larger steps than
      # the network's weights.
      self.refine_optimizer = self.prior_optimizer = None
      if self.model.refinement is not None:
        own, denoiser = refine_variables(self.model.refinement)
        self.refine_optimizer = keras.optimizers.Adam(
            learning_rate=config.refine_learning_rate, beta_1=config.beta1)
        self.refine_optimizer.build(own)
        # A trained denoiser (--refine_prior_train) has network weights, not
        # scalars: it learns at a network's rate.
        if denoiser:
          self.prior_optimizer = keras.optimizers.Adam(
              learning_rate=config.refine_prior_learning_rate,
              beta_1=config.beta1)
          self.prior_optimizer.build(denoiser)
    optimizers = {"optimizer": self.optimizer}
    if self.refine_optimizer is not None:
      optimizers["refine_optimizer"] = self.refine_optimizer
    if self.prior_optimizer is not None:
      optimizers["prior_optimizer"] = self.prior_optimizer
    self.checkpoint = tf.train.Checkpoint(model=self.model,
                                          step=self.global_step, **optimizers)
    self.probe = tf.constant(self.geometry.probe, tf.complex64)
    # The metrics' region: the refinement loss and the image panels.
    self.lit = metrics.illuminated_region(
        self.geometry.layout, self.geometry.object_shape, self.geometry.probe)
    self.mask = tf.constant(self.lit, tf.float32)
    self.pattern_step = self._make_pattern_step()
    self._refine_step = None  # compiled when a refinement epoch needs it

  @property
  def step(self):
    """The global step (steps trained so far)."""
    return int(self.global_step.numpy())

  def _learning_rate(self):
    """The network's learning rate: a float, or the cosine schedule of the
    global step (a resumed run continues the same curve)."""
    config = self.config
    if config.lr_schedule == "cosine":
      schedule = keras.optimizers.schedules.CosineDecay(
          config.learning_rate, config.epochs * self.steps_per_epoch)
      return lambda: schedule(self.global_step)
    return config.learning_rate

  def is_refine_epoch(self, epoch):
    """Whether 0-based `epoch` trains end to end on whole scans."""
    return bool(self.model.refine_steps) and epoch >= self.config.epochs

  def epoch_steps(self, epoch):
    """Steps of 0-based `epoch` (refinement epochs may be shorter)."""
    if self.is_refine_epoch(epoch) and self.config.refine_steps_per_epoch:
      return self.config.refine_steps_per_epoch
    return self.steps_per_epoch

  def train_step(self, epoch):
    """The compiled step of 0-based `epoch`: step(iterator) -> the summed
    loss of the replicas."""
    if not self.is_refine_epoch(epoch):
      return self.pattern_step
    if self._refine_step is None:
      self._refine_step = self.make_refine_step()
    return self._refine_step

  def _distributed(self, step_fn):
    """A compiled step: `step_fn` on every replica's next batch, losses
    summed; it counts the global step."""
    strategy, global_step = self.strategy, self.global_step

    @tf.function
    def step(iterator):
      per_replica = strategy.run(step_fn, args=(next(iterator),))
      loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                             axis=None)
      global_step.assign_add(1)
      return loss

    return step

  def _make_pattern_step(self):
    """The step of the pattern epochs: single patterns mixed across scans."""
    model, optimizer = self.model, self.optimizer
    spec, probe = self.config.loss_spec, self.probe
    patterns_per_step = self.patterns_per_step

    def step_fn(batch):
      with tf.GradientTape() as tape:
        per_pattern = evaluator_lib.pattern_batch_loss(
            model, batch, spec, probe, training=True)
        loss = tf.nn.compute_average_loss(
            per_pattern, global_batch_size=patterns_per_step)
      # The per-pattern loss only reaches the encoder-decoder.
      variables = model.patch_network.trainable_variables
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    return self._distributed(step_fn)

  def make_refine_step(self):
    """The end-to-end step of the refinement epochs: whole scans, the final
    object's loss."""
    model, optimizer = self.model, self.optimizer
    refine_optimizer, prior_optimizer = (self.refine_optimizer,
                                         self.prior_optimizer)
    config, probe, mask = self.config, self.probe, self.mask
    # The network learns in these epochs only on request
    # (TrainConfig.refine_train_network).
    weights = (model.patch_network.trainable_variables
               if config.refine_train_network else [])
    refinement, denoiser = refine_variables(model.refinement)

    def step_fn(batch):
      with tf.GradientTape() as tape:
        # BatchNorm in inference mode: batches of whole scans would pull its
        # statistics away from those of the mixed pattern batches.
        per_scan, _ = evaluator_lib.scan_batch_loss(
            model, batch, config.loss_spec, probe, False, mask)
        loss = tf.nn.compute_average_loss(
            per_scan, global_batch_size=config.scan_batch_size)
      grads = skip_if_not_finite(
          tape.gradient(loss, weights + refinement + denoiser))
      first, last = len(weights), len(weights) + len(refinement)
      if weights:
        optimizer.apply_gradients(zip(grads[:first], weights))
      refine_optimizer.apply_gradients(zip(grads[first:last], refinement))
      if denoiser:
        prior_optimizer.apply_gradients(zip(grads[last:], denoiser))
      return loss

    return self._distributed(step_fn)

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
          config.data_dir, "train", batch, seed=seed, repeat=True,
          input_context=input_context, shuffle_scans=config.shuffle_scans,
          drop_remainder=True, verify=False)

    return self.strategy.distribute_datasets_from_function(dataset_fn)

  def learning_rate(self):
    """The network's current learning rate."""
    return float(np.asarray(self.optimizer.learning_rate))

  def evaluator(self):
    """The held-out evaluator of the test split (`evaluator.Evaluator`)."""
    config = self.config
    test = pipeline.make_dataset(
        config.data_dir, "test",
        1 if self.info.family else max(1, config.batch_size), shuffle=False,
        verify=False)
    return evaluator_lib.Evaluator(
        self.model, test, self.geometry, loss=config.loss_spec,
        objects=self.info.objects, max_scans=config.eval_scans,
        num_images=config.num_images, data_dir=config.data_dir,
        split="test", family=self.info.family is not None)

  def write_eval(self, writer, scalars, images, step):
    """Writes held-out metrics and image panels to a summary writer."""
    with writer.as_default(step=step):
      tf.summary.scalar("loss", scalars["loss"])
      tf.summary.scalar("data_misfit", scalars["misfit"])
      for name in evaluator_lib.METRIC_NAMES:
        if np.isfinite(scalars[name]):  # none without objects
          tf.summary.scalar(name, scalars[name])
      tf.summary.scalar("inference_scans_per_second",
                        scalars["scans_per_second"])
      if len(images["truth"]):
        panels = evaluator_lib.image_panels(
            images["truth"], images["estimate"],
            self.network_config.amplitude_range,
            self.network_config.phase_range, self.lit)
        for name, panel in panels.items():
          tf.summary.image(f"{name} (truth | estimate | error)", panel,
                           max_outputs=len(panel))
    writer.flush()
