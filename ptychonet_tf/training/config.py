"""The frozen training configuration (built from flags by ptychonet_tf/cli/train.py)."""
import dataclasses
from typing import Optional

from ptychonet_tf import settings
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import losses
from ptychonet_tf.model.network import NetworkConfig

# Learning-rate schedules of the network's optimizer (TrainConfig.lr_schedule).
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the training loop needs.

  Each field but the paths and `network` is one setting
  (`ptychonet_tf.settings`): its help, default and choices are written here
  once, and the flags of `train` derive from them.

  Attributes:
    data_dir: dataset directory (tools/make_tfrecords.py).
    model_dir: run directory: checkpoints, TensorBoard logs, model.json.
    export_dir: SavedModel base directory; None = <model_dir>/export.
    network: the network's settings (`network.NetworkConfig`).
  """
  data_dir: str
  model_dir: str
  export_dir: Optional[str] = None
  network: NetworkConfig = NetworkConfig()
  epochs: int = settings.setting(
      10, "Training epochs (passes over the train split with batches of "
      "single patterns: the per-pattern network's training).")
  refine_epochs: int = settings.setting(
      0, "With --refine_steps > 0: epochs of end-to-end training on whole "
      "scans (the final object's loss) after --epochs of per-pattern "
      "training; ignored without refinement.")
  batch_size: int = settings.setting(
      4, "Global batch size in scans' worth of patterns: each step trains on "
      "batch_size * N single patterns mixed across scans, split over the "
      "replicas.")
  shuffle_scans: int = settings.setting(
      16, "Training patterns are shuffled across scans in a buffer of this "
      "many scans' worth of patterns; 0 = batches of whole scans (worse; for "
      "comparison).")
  steps_per_epoch: int = settings.setting(
      0, "Steps per epoch; 0 = train scans // batch_size.")
  learning_rate: float = settings.setting(2e-4, "Adam learning rate.")
  lr_schedule: str = settings.setting(
      "constant", "Network learning rate: constant (the paper) or a half "
      "cosine from --learning_rate to 0 over the --epochs (then 0).",
      choices=LR_SCHEDULES)
  beta1: float = settings.setting(0.5, "Adam beta_1.")
  refine_learning_rate: float = settings.setting(
      1e-2, "Adam learning rate of the refinement's own variables (step "
      "sizes, momenta, CNN corrections) in the refinement epochs.")
  refine_prior_learning_rate: float = settings.setting(
      1e-4, "With --refine_prior_train: Adam learning rate of the prior's "
      "denoiser weights in the refinement epochs (at --refine_learning_rate "
      "they diverge).")
  refine_train_network: bool = settings.setting(
      False, "In the refinement epochs also update the per-pattern network "
      "through the refinement steps (at --learning_rate, BatchNorm in "
      "inference mode); default: only the refinement's own variables learn "
      "there.")
  refine_steps_per_epoch: int = settings.setting(
      0, "Steps of a refinement epoch (0 = as the pattern epochs).")
  refine_batch_size: int = settings.setting(
      0, "Scans per step of the refinement epochs (0 = --batch_size); each "
      "scan's K steps are kept for the gradient, so lower it where memory is "
      "short.")
  loss: str = settings.setting(
      "mse", "mse: amplitude and phase MSE (eq. 5); dse: MSE + dse_lambda * "
      "DFT loss (eqs. 6-7); physics: self-supervised, the misfit of the "
      "measured amplitudes and those of the model's patches, then of its "
      "final object (no true object used; see --physics_noise); mse+physics: "
      "MSE + dse_lambda * that misfit.", choices=losses.LOSSES)
  dse_lambda: float = settings.setting(
      1.0, "Weight of the data term in dse and mse+physics.")
  refine_object_log: str = settings.setting(
      "joint", "The refinement epochs' object term: joint, 0.01 ln(amplitude "
      "MSE + phase MSE) of the final object (the larger, usually the phase, "
      "rules); parts, 0.01 times the mean of ln(amplitude MSE) and ln(phase "
      "MSE), so that both count in dB alike; joint+parts, the mean of the "
      "two.", choices=losses.OBJECT_LOGS)
  physics_noise: str = settings.setting(
      "gaussian", "The misfit of --loss=physics and mse+physics: gaussian "
      "(amplitude MSE) or poisson (Poisson deviance of the intensities, for "
      "photon-counting data).", choices=losses.NOISE_MODELS)
  mixed_precision: bool = settings.setting(
      False, "Compute the encoder-decoder in bfloat16 (its policy "
      "mixed_bfloat16); variables, losses and stitching stay float32. The "
      "Trainer copies it into the network config.")
  seed: int = settings.setting(
      0, "Random seed: input shuffling, and the initialisation seed with "
      "which the entry point seeds Keras before building the Trainer.")
  eval_scans: int = settings.setting(
      0, "Held-out scans evaluated each epoch; 0 = the whole test split.")
  eval_every: int = settings.setting(
      1, "Epochs between held-out evaluations; the last epoch is always "
      "evaluated (for models whose evaluation costs more than an epoch).")
  num_images: int = settings.setting(
      3, "Test objects shown as image panels in TensorBoard.")
  keep_checkpoints: int = settings.setting(
      3, "Checkpoints kept in model_dir.")
  checkpoint_secs: float = settings.setting(
      600.0, "Also checkpoint within an epoch after this many seconds (0 = "
      "only at epoch ends).")
  export: bool = settings.setting(
      True, "Export a SavedModel when training ends.")
  verbose: bool = settings.setting(
      True, "Print progress to the console.", flag=False)
  restart: bool = settings.setting(
      False, "Start a fresh run in a model_dir that holds one; the old run "
      "is moved to <model_dir>/previous-<time>/ (nothing is deleted). "
      "Refused where model_dir holds a dataset or files that are not a "
      "run's.", flag="train")
  fine_tune: bool = settings.setting(
      False, "model_dir holds a run on another dataset: start from its "
      "latest weights (same pattern size) with a fresh optimizer at step 0 "
      "and record the new dataset; the old run is moved to "
      "<model_dir>/previous-<time>/. On its own dataset the run resumes.",
      flag="train")
  init_from: Optional[str] = settings.setting(
      None, "The --model_dir of an earlier run or a SavedModel export "
      "(--export_dir or a version of it): start this new run (model_dir "
      "empty, or with --restart) from its weights with a fresh optimizer at "
      "step 0 (the flags must build the same network), e.g. --loss=physics "
      "on data without objects.", flag="train")

  @property
  def loss_spec(self):
    """The training loss as a `losses.LossSpec`."""
    return losses.LossSpec(self.loss, self.dse_lambda, self.physics_noise,
                           self.refine_object_log)

  def validate(self):
    """Raises UserError naming the first bad setting."""
    if not self.model_dir:
      raise UserError("model_dir is required (where checkpoints and logs go)")
    if not self.data_dir:
      raise UserError("data_dir is required (a dataset directory written by "
                      "tools/make_tfrecords.py)")
    for name in ("epochs", "batch_size", "eval_every"):
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
    if not self.refine_learning_rate > 0:
      raise UserError(f"refine_learning_rate={self.refine_learning_rate} "
                      f"must be > 0")
    if not self.refine_prior_learning_rate > 0:
      raise UserError(f"refine_prior_learning_rate="
                      f"{self.refine_prior_learning_rate} must be > 0")
    settings.check_choices(self)
    if not 0 <= self.beta1 < 1:
      raise UserError(f"beta1={self.beta1} must be in [0, 1)")
    if self.dse_lambda < 0:
      raise UserError(f"dse_lambda={self.dse_lambda} must be >= 0")
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
