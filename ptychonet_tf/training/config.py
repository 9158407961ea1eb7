"""The frozen training configuration (built from flags by ptychonet_tf/cli/train.py)."""
import dataclasses
from typing import Optional

from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import losses
from ptychonet_tf.model.network import NetworkConfig

# Learning-rate schedules of the network's optimizer (TrainConfig.lr_schedule).
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the training loop needs.

  Attributes:
    data_dir: dataset directory (tools/make_tfrecords.py).
    model_dir: run directory: checkpoints, TensorBoard logs, model.json.
    export_dir: SavedModel base directory; None = <model_dir>/export.
    network: width, depth and output ranges of the network.
    epochs: passes over the train split with batches of single patterns
      (the per-pattern network's training).
    refine_epochs: then, when the network refines (network.refine_steps >
      0), passes over whole scans training everything end to end on the
      final object (`evaluator.scan_batch_loss`); ignored without
      refinement.
    batch_size: global batch in scans' worth of patterns (batch_size * N
      single patterns, mixed across scans; split over the replicas).
    shuffle_scans: pattern shuffle buffer of the training input, in scans
      (0 = batches of whole scans, for comparison).
    steps_per_epoch: 0 = train scans // batch_size.
    learning_rate, beta1: Adam.
    lr_schedule: "constant" (the paper) or "cosine": the network's learning
      rate decays from learning_rate to 0 along a half cosine over the
      pattern epochs (epochs x steps per epoch), then stays at 0.
    refine_learning_rate: Adam learning rate of the refinement's own
      variables (step sizes, momenta, corrections) in the refinement epochs.
    refine_batch_size: scans per step of a refinement epoch; 0 = batch_size
      (each scan's K steps are kept for the gradient: lower it where memory
      is short).
    refine_steps_per_epoch: steps of a refinement epoch; 0 = as the pattern
      epochs (train scans // batch_size). The refinement's few scalars
      need far fewer steps than the network.
    refine_train_network: in the refinement epochs also update the
      per-pattern network (at learning_rate, BatchNorm in inference mode)
      through the refinement steps; False keeps it as the pattern epochs
      left it (measured better: docs/training.md).
    loss: one of `losses.LOSSES`: "mse" (eq. 5), "dse" (plus dse_lambda
      times the DFT loss), "physics" (self-supervised: the data misfit of
      the patches, then of the final object; reads no true object) or
      "mse+physics" (MSE plus dse_lambda times that misfit).
    physics_noise: the misfit of "physics" and "mse+physics": "gaussian"
      (amplitude MSE) or "poisson" (Poisson deviance of the intensities).
    mixed_precision: compute the encoder-decoder in bfloat16 (its policy
      mixed_bfloat16; variables, losses and stitching stay float32). The
      setting of a run: the Trainer copies it into the network config
      (`network.mixed_precision` must not contradict it).
    seed: input shuffling seed; also the initialisation seed, with which the
      entry point (cli/train.py) seeds Keras before building the Trainer.
    eval_scans: held-out scans evaluated per epoch (0 = all).
    num_images: test objects shown in TensorBoard image panels.
    keep_checkpoints: checkpoints kept.
    checkpoint_secs: checkpoint within an epoch after this long (0 = never).
    export: write a SavedModel at the end.
    verbose: print progress to the console.
    restart: start a fresh run in a model_dir that holds one (of this or
      another dataset); the old run is moved to model_dir/previous-<time>/.
    fine_tune: when model_dir holds a run on another dataset, start from its
      latest weights (the same pattern size, so the model fits) with a fresh
      optimizer at step 0, recording the new dataset; the old run is moved to
      model_dir/previous-<time>/. On the run's own dataset it resumes.
    init_from: another run directory or a SavedModel export (an
      --export_dir or one version of it): start this new run (model_dir
      empty, or with `restart`) from that run's latest weights or the
      export's, with a fresh optimizer at step 0 (e.g. a self-supervised
      fine-tune on measured data); the network flags must build the same
      network (an export keeps the refinement steps it was exported with).
  """
  data_dir: str
  model_dir: str
  export_dir: Optional[str] = None
  network: NetworkConfig = NetworkConfig()
  epochs: int = 10
  refine_epochs: int = 0
  batch_size: int = 4
  shuffle_scans: int = 16
  steps_per_epoch: int = 0
  learning_rate: float = 2e-4
  lr_schedule: str = "constant"
  beta1: float = 0.5
  refine_learning_rate: float = 1e-2
  refine_train_network: bool = False
  refine_steps_per_epoch: int = 0
  refine_batch_size: int = 0
  loss: str = "mse"
  dse_lambda: float = 1.0
  physics_noise: str = "gaussian"
  mixed_precision: bool = False
  seed: int = 0
  eval_scans: int = 0
  num_images: int = 3
  keep_checkpoints: int = 3
  checkpoint_secs: float = 600.0
  export: bool = True
  verbose: bool = True
  restart: bool = False
  fine_tune: bool = False
  init_from: Optional[str] = None

  @property
  def loss_spec(self):
    """The training loss as a `losses.LossSpec`."""
    return losses.LossSpec(self.loss, self.dse_lambda, self.physics_noise)

  def validate(self):
    """Raises UserError naming the first bad setting."""
    if not self.model_dir:
      raise UserError("model_dir is required (where checkpoints and logs go)")
    if not self.data_dir:
      raise UserError("data_dir is required (a dataset directory written by "
                      "tools/make_tfrecords.py)")
    for name in ("epochs", "batch_size"):
      if getattr(self, name) < 1:
        raise UserError(f"{name}={getattr(self, name)} must be >= 1")
    for name in ("steps_per_epoch", "eval_scans", "num_images",
                 "shuffle_scans", "refine_epochs", "refine_steps_per_epoch",
                 "refine_batch_size"):
      if getattr(self, name) < 0:
        raise UserError(f"{name}={getattr(self, name)} must be >= 0")
    if self.keep_checkpoints < 1:
      raise UserError(f"keep_checkpoints={self.keep_checkpoints} must be >= 1")
    if not self.learning_rate > 0:
      raise UserError(f"learning_rate={self.learning_rate} must be > 0")
    if self.lr_schedule not in LR_SCHEDULES:
      raise UserError(f"lr_schedule {self.lr_schedule!r} is not one of "
                      f"{LR_SCHEDULES}")
    if not self.refine_learning_rate > 0:
      raise UserError(f"refine_learning_rate={self.refine_learning_rate} "
                      f"must be > 0")
    if not 0 <= self.beta1 < 1:
      raise UserError(f"beta1={self.beta1} must be in [0, 1)")
    if self.loss not in losses.LOSSES:
      raise UserError(f"loss={self.loss} is not one of {losses.LOSSES}")
    if self.dse_lambda < 0:
      raise UserError(f"dse_lambda={self.dse_lambda} must be >= 0")
    if self.physics_noise not in losses.NOISE_MODELS:
      raise UserError(f"physics_noise={self.physics_noise} is not one of "
                      f"{losses.NOISE_MODELS}")
    if self.init_from and self.fine_tune:
      raise UserError("--init_from and --fine_tune exclude each other: "
                      "init_from starts a new run from another run's weights, "
                      "fine_tune from the weights of the run in model_dir")
    if self.restart and self.fine_tune:
      raise UserError("--restart and --fine_tune exclude each other: restart "
                      "starts from scratch, fine_tune from the old weights")
    if self.network.mixed_precision and not self.mixed_precision:
      raise UserError("network.mixed_precision=True conflicts with "
                      "mixed_precision=False; set mixed_precision=True on the "
                      "TrainConfig instead (the run's setting)")
    return self

  @property
  def scan_batch_size(self):
    """Scans per step of the refinement epochs."""
    return self.refine_batch_size or self.batch_size

  @property
  def total_epochs(self):
    """Pattern epochs plus, for a refining network, the refinement epochs."""
    return self.epochs + (self.refine_epochs if self.network.refine_steps
                          else 0)
