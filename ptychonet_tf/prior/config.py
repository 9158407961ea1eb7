"""The settings of a prior training run: frozen dataclasses, no TensorFlow.

`cli/train_prior.py` builds a `PriorTrainConfig` from its flags and validates
it before TensorFlow starts, so a bad setting ends in one line at once.
"""
import dataclasses
import os

from ptychonet_tf.utils.errors import UserError

LOSSES = ("mse", "l1", "relative_mse")


@dataclasses.dataclass(frozen=True)
class PatchConfig:
  """How patches are drawn.

  Attributes:
    patch_size: side of the square patches in pixels.
    sigma_max: noise levels are drawn uniformly from [0, sigma_max].
    procedural_fraction: share of patches from procedural images when the
      source has both kinds (ignored when it has only one).
    scale_probability: share of patches cut at twice the size and averaged
      2x2 (images smaller than 2 * patch_size are always cut at 1x).
    seed: seed of the whole patch stream.
  """
  patch_size: int = 64
  sigma_max: float = 0.2
  procedural_fraction: float = 0.3
  scale_probability: float = 0.5
  seed: int = 0

  def validate(self):
    if self.patch_size < 8:
      raise UserError(f"patch size {self.patch_size} must be at least 8")
    if not 0 < self.sigma_max <= 1:
      raise UserError(f"sigma_max {self.sigma_max} must be in (0, 1]")
    if not 0 <= self.procedural_fraction <= 1:
      raise UserError(f"procedural fraction {self.procedural_fraction} must "
                      f"be in [0, 1]")
    if not 0 <= self.scale_probability <= 1:
      raise UserError(f"scale probability {self.scale_probability} must be "
                      f"in [0, 1]")
    return self


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
  """The denoiser's architecture (`network.PriorDenoiser` arguments)."""
  channels: tuple = (32, 64, 128)
  blocks: int = 2
  use_bias: bool = False

  def build(self, **kwargs):
    """A new `network.PriorDenoiser` of these settings (kwargs: Layer's)."""
    from ptychonet_tf.prior import network  # pylint: disable=g-import-not-at-top
    return network.PriorDenoiser(self.channels, self.blocks, self.use_bias,
                                 **kwargs)

  def as_dict(self):
    return {"channels": list(self.channels), "blocks": self.blocks,
            "use_bias": self.use_bias}


@dataclasses.dataclass(frozen=True)
class PriorTrainConfig:
  """One training run of the prior.

  Attributes:
    model_dir: the run directory (checkpoints, summaries, prior.json).
    export_dir: where the final weights and SavedModel go (None: none).
    ship_dir: where prior.json and prior.npz are also copied at the end
      (the package's weights folder for the shipped prior; None: nowhere).
    images: image source spec (`data.images.open_image_pools`); its train
      pool is trained on, its test pool gives the validation crops.
    network: NetworkSettings.
    patches: PatchConfig.
    batch_size: patches per step.
    steps: training steps in all (a resumed run stops at the same step).
    learning_rate: peak learning rate of Adam.
    warmup_steps: linear warm-up steps before the cosine decay.
    final_lr_fraction: the cosine decays to learning_rate times this.
    loss: "mse", "l1" or "relative_mse" (each patch's squared error divided
      by sigma^2 + 0.01^2, so every noise level counts alike in dB).
    mixed_precision: train in bfloat16 compute (variables float32).
    log_every: steps between progress lines and train summaries.
    eval_every: steps between validation PSNR summaries.
    checkpoint_every: steps between checkpoints.
    keep_checkpoints: checkpoints kept.
    eval_size: side of the validation crops.
    init_from: an exported prior (prior.json, prior.npz) whose weights a
      new run starts from (fine-tuning); None: a fresh initialisation. A
      resumed run starts from its checkpoint instead.
    pairs: npz files of (noisy, clean) pairs (`make_prior_pairs`: inputs,
      targets, sigma), comma-separated, that a share `pair_fraction` of the
      patches is cut from; None: white noise only.
    pair_fraction: the share of patches cut from `pairs`.
  """
  model_dir: str
  export_dir: str = None
  ship_dir: str = None
  images: str = "default+procedural:256"
  network: NetworkSettings = NetworkSettings()
  patches: PatchConfig = PatchConfig()
  batch_size: int = 32
  steps: int = 10000
  learning_rate: float = 1e-3
  warmup_steps: int = 200
  final_lr_fraction: float = 0.01
  loss: str = "relative_mse"
  mixed_precision: bool = True
  log_every: int = 50
  eval_every: int = 500
  checkpoint_every: int = 250
  keep_checkpoints: int = 3
  eval_size: int = 128
  init_from: str = None
  pairs: str = None
  pair_fraction: float = 0.5

  def validate(self):
    """Raises UserError for settings no run can use; returns self."""
    def positive(name):
      if getattr(self, name) < 1:
        raise UserError(f"{name} {getattr(self, name)} must be >= 1")
    for name in ("batch_size", "steps", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints", "eval_size"):
      positive(name)
    if self.loss not in LOSSES:
      raise UserError(f"loss {self.loss!r} is unknown; expected one of "
                      f"{LOSSES}")
    if not self.learning_rate > 0:
      raise UserError(f"learning rate {self.learning_rate} must be > 0")
    if self.warmup_steps < 0 or not 0 <= self.final_lr_fraction <= 1:
      raise UserError(f"warmup steps {self.warmup_steps} must be >= 0 and "
                      f"final lr fraction {self.final_lr_fraction} in [0, 1]")
    if not self.network.channels or min(self.network.channels) < 1:
      raise UserError(f"channels {self.network.channels} must be positive")
    if self.network.blocks < 0:
      raise UserError(f"blocks {self.network.blocks} must be >= 0")
    self.patches.validate()
    if not 0 <= self.pair_fraction <= 1:
      raise UserError(f"pair fraction {self.pair_fraction} must be in [0, 1]")
    for path in (self.pairs.split(",") if self.pairs else ()):
      if not os.path.isfile(path):
        raise UserError(f"pairs {path} is not a file; expected an npz of "
                        f"python -m ptychonet_tf.make_prior_pairs")
    if self.init_from and not os.path.isdir(self.init_from):
      raise UserError(f"init_from {self.init_from} is not a folder; expected "
                      f"an exported prior (prior.json, prior.npz)")
    m = 2 ** (len(self.network.channels) - 1)
    if self.patches.patch_size % m:
      raise UserError(f"patch size {self.patches.patch_size} must be a "
                      f"multiple of {m} (the U-Net's downsampling for "
                      f"{len(self.network.channels)} scales)")
    if self.model_dir and os.path.isfile(self.model_dir):
      raise UserError(f"model dir {self.model_dir} is a file; expected a "
                      f"directory")
    return self
