"""The PtychoNet network: a per-pattern encoder-decoder plus stitching.

Each diffraction amplitude pattern A_j [h, w] goes through the same
convolutional encoder-decoder (Guan et al., BMVC 2019):

  encoder: `depth` x [Conv2D 4x4 stride 2 -> BatchNorm -> LeakyReLU(0.2)],
           channels base, 2*base, ... (capped at max_channels);
  decoder: `depth - 1` x [Conv2DTranspose 4x4 stride 2 -> BatchNorm -> ReLU],
           then Conv2DTranspose 4x4 stride 2 to 2 channels -> sigmoid,
           mapped linearly to the amplitude and phase ranges.

BatchNorm uses momentum `batchnorm_momentum` (0.9 by default) and
is synchronised over the replicas of a distribution strategy: batch
statistics are those of the global batch, and every replica and worker keeps
the same moving statistics (a no-op on one device). The
input is log(1 + A / s) with s the probe's RMS amplitude (a fixed,
geometry-derived scale that tames the diffraction peak). The N patches of a
scan are stitched into the H x W object by `layers.StitchPatches`, by
default weighted by the probe intensity (`stitch_weighting="probe"`; "uniform"
is the paper's plain average); the MSE loss uses the same per-pixel weights,
so the network is not asked to guess the object under the probe's dark
corners, which its pattern says nothing about.

Precision is a property of each model, never of the process: the
encoder-decoder computes in the Keras dtype policy `compute_policy`
("float32", or "mixed_bfloat16": bfloat16 compute with float32 variables),
passed as `dtype=` to each of its layers; the wrapper, its inputs, outputs
and the stitching are float32 in both, and so are all variables, so
checkpoints of either policy load into a model of the other. The global Keras
dtype policy is neither read nor changed.
"""
import dataclasses
import math
from typing import Tuple

import numpy as np
import tensorflow as tf
import keras

from ptychonet_tf import settings
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import layers as layers_lib
from ptychonet_tf.model import refinement as refinement_lib
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.prior import objects as prior_objects

# Keras dtype policies the encoder-decoder may compute in.
COMPUTE_POLICIES = ("float32", "mixed_bfloat16")
# "paper": the encoder-decoder of the paper's Figure 1 exactly; "global":
# the same with a fully connected layer at the lowest resolution, so that
# every output pixel can depend on every input frequency (the inverse of a
# Fourier magnitude is not local); "residual": the paper's network with a
# residual block (two 3x3 convolutions added to their input) after every
# encoder and decoder stage; "two_decoders": one encoder, separate decoders
# for the amplitude and the phase. docs/training.md measures each.
ARCHITECTURES = ("paper", "global", "residual", "two_decoders")
# The network's input: "log" is log(1 + A / s) (s the probe's RMS
# amplitude); "pattern" then standardises each pattern (zero mean, unit
# variance over its pixels), so the network sees every pattern at one
# contrast whatever its object's transmission. docs/training.md measures it.
INPUT_NORMS = ("log", "pattern")
# Passes of the refinement steps that `reconstruct_scan(refine_probe=True)`
# runs by default (and `reconstruct --refine_probe` asks the SavedModel's
# any_scan_refine_probe for): each continues from the last one's object
# and probe. Given the probe 20% high in
# amplitude with 0.5 rad of defocus, the small_any model recovered 73% /
# 85% (amplitude / phase) of the PSNR lost to it after 12 passes, 85% / 96%
# after 20; given it 20% larger with the defocus, 91% / 98% after 60
# (docs/training.md, "Probe refinement"), in three times the time.
PROBE_PASSES = 20


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """Width, depth, output ranges, precision and refinement of the network.

  Each field is one setting (`ptychonet_tf.settings`): its help, default and
  choices are written here once; the flags of `train`, the keys of
  model.json (`PtychoNet.get_config`) and the run directory's compatibility
  check derive from them.
  """
  base_channels: int = settings.setting(
      32, "Channels of the first encoder layer (doubling per layer).")
  depth: int = settings.setting(
      4, "Encoder (and decoder) layers; the pattern size must be divisible "
      "by 2**depth.")
  max_channels: int = settings.setting(
      256, "Channel cap of the encoder layers.")
  amplitude_range: Tuple[float, float] = settings.setting(
      (0.5, 1.0), "(low, high) the sigmoid's amplitude channel maps to "
      "(from --amp_min/--amp_max or the dataset).", flag=False)
  phase_range: Tuple[float, float] = settings.setting(
      (-math.pi / 3, 0.0), "(low, high) the sigmoid's phase channel maps to "
      "(from --phase_min/--phase_max or the dataset).", flag=False)
  stitch_method: str = settings.setting(
      "scatter", "How patches are summed into the object.",
      choices=layers_lib.STITCH_METHODS, flag=False)
  stitch_weighting: str = settings.setting(
      "probe", "How patches are averaged into the object (and weighted in "
      "the MSE loss): probe = by the probe intensity |P|^2; uniform = every "
      "window pixel counts once (the paper's Algorithm 1).",
      choices=layers_lib.STITCH_WEIGHTINGS, saved=False)
  mixed_precision: bool = settings.setting(
      False, "Compute the encoder-decoder in bfloat16 (policy "
      "mixed_bfloat16; variables stay float32). The run's setting "
      "(TrainConfig.mixed_precision); the global Keras policy is left alone.",
      flag=False, saved=False, compared=False)
  refine_steps: int = settings.setting(
      0, "Physics-unrolled refinement steps after stitching (learned "
      "accelerated gradient steps with the known probe, inside the model and "
      "its SavedModel); 0 = the paper's PtychoNet.")
  refine_filters: int = settings.setting(
      0, "Width of each refinement step's learned CNN correction (0 = "
      "learned step sizes only).")
  refine_groups: int = settings.setting(
      1, "Interleaved position groups of the refinement steps: step k uses "
      "group k mod G, so a step costs 1/G of a full one and the object moves "
      "after every group (1 = every step uses all positions).")
  refine_inertia: float = settings.setting(
      1e-3, "Preconditioner floor of the refinement steps, relative to the "
      "peak illumination: larger damps the steps where few photons fall "
      "(noisy data: e.g. 0.3).")
  refine_line_search: bool = settings.setting(
      False, "Each refinement step's length from the least-squares fit of "
      "its exit-wave update (LSQML's step length, `operator.step_lengths`), "
      "times the learned step size: a step that adapts to the scan's "
      "geometry (a model for any scan).")
  refine_restart: bool = settings.setting(
      False, "Drop a refinement step's momentum when its position group's "
      "misfit rose since the group's previous step (adaptive restart: "
      "accelerated steps that do not diverge on scans unlike the training "
      "ones).")
  refine_data_steps: str = settings.setting(
      "gradient", "What the refinement steps are: gradient = learned, "
      "accelerated error-reduction steps; dm = difference-map iterations "
      "with learned step sizes (one position group; noise-free scans of few "
      "positions, where DM's phase converges faster; docs/training.md).",
      choices=refinement_lib.DATA_STEPS)
  refine_noise_model: str = settings.setting(
      "gaussian", "The likelihood the gradient refinement steps lower: "
      "gaussian (amplitude least squares) or poisson (photon counts: at "
      "about 1e3 photons per pattern and below the Gaussian steps shrink "
      "the amplitude, docs/training.md).",
      choices=operator_lib.NOISE_MODELS)
  refine_smoothing: int = settings.setting(
      0, "Odd size of a learned linear filter on the refined object, "
      "initialised to the identity (noisy data: e.g. 7); 0 = none.")
  refine_prior: str = settings.setting(
      "", "Learned image prior between the refinement steps: 'default' (the "
      "package's shipped prior), 'base' (the white-noise prior it was "
      "fine-tuned from), the folder of an exported prior "
      "(train_prior --export_dir), or '' (none). Its denoiser becomes part "
      "of the model and its SavedModel.")
  refine_prior_every: int = settings.setting(
      0, "Refinement steps between prior steps (0 = --refine_groups: one "
      "prior step per pass over the positions).")
  refine_prior_sigma_start: float = settings.setting(
      0.1, "Noise level of the first prior step at initialisation (the "
      "levels fall geometrically to --refine_prior_sigma_end; learned end "
      "to end).")
  refine_prior_sigma_end: float = settings.setting(
      0.01, "Noise level of the last prior step at initialisation.")
  refine_prior_domain: str = settings.setting(
      "complex", "What the prior steps denoise: the object's real and "
      "imaginary parts (complex) or its amplitude and phase.",
      choices=prior_objects.DOMAINS)
  refine_prior_amplitude_scale: float = settings.setting(
      1.0, "The prior steps denoise the first image of "
      "--refine_prior_domain (the real part, or the amplitude) at this "
      "times their noise level.")
  refine_prior_train: bool = settings.setting(
      False, "Also train the prior's denoiser end to end (else only its "
      "noise levels are learned).")
  refine_prior_untied: bool = settings.setting(
      False, "Give every prior step a denoiser of its own (each starts as "
      "the prior; with --refine_prior_train each learns its step's error). "
      "Same time per call, the denoiser weights times the prior steps.")
  architecture: str = settings.setting(
      "paper", "Per-pattern network: 'paper' (Figure 1 exactly), 'global' "
      "(plus a fully connected layer at the lowest resolution), 'residual' "
      "(plus a residual block after every stage) or 'two_decoders' (separate "
      "amplitude and phase decoders).", choices=ARCHITECTURES)
  input_norm: str = settings.setting(
      "log", "Network input: log(1 + A / s) (log), or that standardised per "
      "pattern (pattern).", choices=INPUT_NORMS)
  probe_input: bool = settings.setting(
      False, "Give the per-pattern network the probe too: its real and "
      "imaginary parts over its RMS amplitude as two more input channels, "
      "so that one network can serve patterns of several probes (the "
      "SavedModel's any_scan signature passes each scan's probe).")
  batchnorm_momentum: float = settings.setting(
      0.9, "Momentum of the BatchNorm moving statistics, in [0, 1): 0.9 is "
      "PyTorch's default; Keras' 0.99 leaves them stale for the first few "
      "hundred steps of a short run.")

  @property
  def compute_policy(self):
    """The Keras dtype policy name of the encoder-decoder."""
    return "mixed_bfloat16" if self.mixed_precision else "float32"

  def validate(self, probe_shape):
    if self.base_channels < 1 or self.max_channels < self.base_channels:
      raise UserError(f"network width base_channels={self.base_channels}, "
                      f"max_channels={self.max_channels} must satisfy "
                      f"1 <= base_channels <= max_channels")
    if self.depth < 1:
      raise UserError(f"network depth {self.depth} must be >= 1")
    factor = 2 ** self.depth
    if any(s % factor for s in probe_shape):
      raise UserError(f"the {probe_shape[0]}x{probe_shape[1]} patterns are not "
                      f"divisible by 2**depth = {factor}; use a smaller depth")
    settings.check_choices(self)
    if self.refine_steps < 0 or self.refine_filters < 0:
      raise UserError(f"refine_steps={self.refine_steps} and refine_filters="
                      f"{self.refine_filters} must be >= 0")
    if not 0 <= self.batchnorm_momentum < 1:
      raise UserError(f"batchnorm_momentum={self.batchnorm_momentum} must be "
                      f"in [0, 1)")
    if self.refine_groups < 1:
      raise UserError(f"refine_groups={self.refine_groups} must be >= 1")
    if self.refine_inertia <= 0:
      raise UserError(f"refine_inertia={self.refine_inertia} must be > 0")
    if self.refine_smoothing < 0 or (self.refine_smoothing and
                                     self.refine_smoothing % 2 == 0):
      raise UserError(f"refine_smoothing={self.refine_smoothing} must be 0 "
                      f"(none) or an odd filter size")
    return self

  def model_settings(self):
    """{name: value} of the settings PtychoNet takes and model.json saves."""
    return settings.values(self, lambda item: item.saved)

  @classmethod
  def from_model_settings(cls, saved, stitch_weighting, mixed_precision):
    """The config of a PtychoNet's saved settings (a model.json's keys; a
    missing key takes its default) and its weighting and precision."""
    given = {item.name: settings.coerce(item, saved[item.name])
             for item in settings.settings_of(cls)
             if item.saved and item.name in saved}
    return cls(stitch_weighting=stitch_weighting,
               mixed_precision=mixed_precision, **given)


def input_scale(probe):
  """The RMS amplitude of the probe: A / s is O(|object|) by Parseval.

  A float for a numpy probe; a float32 tensor for a tensor (a probe given at
  run time, `reconstruct_scan`; probes [..., h, w] give one per probe).
  """
  if tf.is_tensor(probe):
    return tf.sqrt(tf.reduce_mean(tf.abs(probe) ** 2, axis=(-2, -1)))
  return float(np.sqrt(np.mean(np.abs(np.asarray(probe)) ** 2)))


def probe_planes(probe):
  """float32 [..., h, w, 2]: a probe's (or each of probes [..., h, w])
  real and imaginary parts over its RMS amplitude, the network's probe
  channels (`NetworkConfig.probe_input`)."""
  probe = tf.convert_to_tensor(probe, tf.complex64)
  probe = probe / tf.cast(input_scale(probe), tf.complex64)[..., None, None]
  return tf.stack([tf.math.real(probe), tf.math.imag(probe)], -1)


def build_patch_network(config, probe_shape, name="patch_network"):
  """The per-pattern encoder-decoder as a functional Keras model.

  Every layer gets `dtype=config.compute_policy` (the global Keras policy is
  not used); the final sigmoid is float32 in either policy.

  Args:
    config: NetworkConfig (width, depth, mixed_precision).
    probe_shape: (h, w).
    name: the model's name.

  Returns:
    A keras.Model: float32 [b, h, w, C] preprocessed patterns (C = 1, or 3
    with `config.probe_input`: the pattern, then the probe's planes) -> float32
    [b, h, w, 2] in (0, 1) (sigmoid; channel 0 amplitude, channel 1 phase),
    before mapping to the ranges. Under "mixed_bfloat16" the layers before
    the sigmoid compute in bfloat16; all variables are float32.
  """
  h, w = probe_shape
  policy = config.compute_policy
  channels = 3 if config.probe_input else 1
  inputs = keras.Input((h, w, channels), dtype="float32", name="pattern")
  x = inputs
  widths = [min(config.base_channels * 2 ** i, config.max_channels)
            for i in range(config.depth)]
  for i, c in enumerate(widths):
    x = keras.layers.Conv2D(c, 4, strides=2, padding="same", use_bias=False,
                            dtype=policy, name=f"enc{i}_conv")(x)
    x = _batch_norm(config, f"enc{i}_bn")(x)
    x = keras.layers.LeakyReLU(0.2, dtype=policy, name=f"enc{i}_act")(x)
    if config.architecture == "residual":
      x = _residual_block(x, c, config, f"enc{i}_res")
  if config.architecture == "global":
    # [b, h', w', c] -> every position sees the whole pattern, residually.
    low = (h >> config.depth, w >> config.depth, widths[-1])
    flat = keras.layers.Flatten(dtype=policy, name="global_flatten")(x)
    flat = keras.layers.Dense(int(np.prod(low)), dtype=policy,
                              name="global_dense")(flat)
    flat = keras.layers.LeakyReLU(0.2, dtype=policy, name="global_act")(flat)
    x = keras.layers.Add(dtype=policy, name="global_add")(
        [x, keras.layers.Reshape(low, dtype=policy,
                                 name="global_reshape")(flat)])
  if config.architecture == "two_decoders":
    outputs = keras.layers.Concatenate(dtype="float32", name="out")(
        [_decoder(x, widths, 1, config, f"{part}_")
         for part in ("amplitude", "phase")])
  else:
    outputs = _decoder(x, widths, 2, config, "")
  return keras.Model(inputs, outputs, name=name)


def _batch_norm(config, name):
  """A BatchNormalization of the network: config's momentum and precision,
  synchronised over the replicas."""
  return keras.layers.BatchNormalization(
      momentum=config.batchnorm_momentum, synchronized=True,
      dtype=config.compute_policy, name=name)


def _residual_block(x, channels, config, name):
  """x + conv3x3(relu(bn(conv3x3(x)))): refines a stage at its resolution."""
  policy = config.compute_policy
  y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                          dtype=policy, name=f"{name}_conv1")(x)
  y = _batch_norm(config, f"{name}_bn")(y)
  y = keras.layers.ReLU(dtype=policy, name=f"{name}_act")(y)
  y = keras.layers.Conv2D(channels, 3, padding="same", dtype=policy,
                          name=f"{name}_conv2")(y)
  return keras.layers.Add(dtype=policy, name=f"{name}_add")([x, y])


def _decoder(x, widths, outputs, config, prefix):
  """The decoder from the lowest resolution to `outputs` sigmoid channels."""
  policy = config.compute_policy
  for i, c in reversed(list(enumerate(widths[:-1]))):
    x = keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same",
                                     use_bias=False, dtype=policy,
                                     name=f"{prefix}dec{i + 1}_conv")(x)
    x = _batch_norm(config, f"{prefix}dec{i + 1}_bn")(x)
    x = keras.layers.ReLU(dtype=policy, name=f"{prefix}dec{i + 1}_act")(x)
    if config.architecture == "residual":
      x = _residual_block(x, c, config, f"{prefix}dec{i + 1}_res")
  x = keras.layers.Conv2DTranspose(outputs, 4, strides=2, padding="same",
                                   dtype=policy, name=f"{prefix}out_conv")(x)
  return keras.layers.Activation("sigmoid", dtype="float32",
                                 name=f"{prefix}out" if prefix else "out")(x)


@keras.saving.register_keras_serializable(package="ptychonet_tf")
class PtychoNet(keras.Model):
  """PtychoNet trained on one scan geometry; it serves any other too.

  `call` reconstructs scans of the training geometry (its layout, object
  shape and probe are constants); `reconstruct_scan` takes one scan's
  positions and probe as inputs (the SavedModel's any_scan signature).

  Call input:
    amplitudes: float32 [B, N, h, w] diffraction amplitudes of B scans.
  Call output (dict, float32):
    "amplitude", "phase": [B, H, W] the stitched object.
  `predict_patches(amplitudes)` gives the per-pattern predictions
  ("amplitude", "phase": [B, N, h, w]) without stitching (what the losses
  use); `stitch_patches(patches)` stitches them. The encoder-decoder
  computes in `compute_policy`; inputs, outputs, stitching and all variables
  are float32 whatever the policy (and whatever the global Keras policy).

  Args:
    layout: int [N, 4] (top, bottom, left, right).
    object_shape: (H, W).
    probe_shape: (h, w).
    input_scale: s in the input transform log(1 + A / s).
    stitch_weights: None (uniform, the paper) or float [h, w] per-pixel
      weights of a window, used by the stitching and by the MSE loss
      (`layers.stitch_weights` makes them from the probe).
    compute_policy: Keras dtype policy of the encoder-decoder, one of
      COMPUTE_POLICIES: "float32" (the default) or "mixed_bfloat16".
    probe_real, probe_imag: float [h, w] the known probe, needed when
      refine_steps > 0 (None otherwise).
    **kwargs: the saved settings of NetworkConfig
      (`NetworkConfig.model_settings`: base_channels, depth, ...,
      refine_steps, ...; a missing one takes its default), then Keras'
      arguments (name, dtype, ...). Each setting is also an attribute
      (`model.refine_steps`), and `network_config` holds them all.
  """

  def __init__(self, layout, object_shape, probe_shape, input_scale=1.0,
               stitch_weights=None, compute_policy="float32", probe_real=None,
               probe_imag=None, **kwargs):
    saved = {name: kwargs.pop(name)
             for name in NetworkConfig().model_settings() if name in kwargs}
    # The wrapper stays float32 (no autocast of the amplitudes); the
    # encoder-decoder inside computes in `compute_policy`.
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.layout = np.asarray(layout, np.int32)
    self.object_shape = tuple(int(s) for s in object_shape)
    self.probe_shape = tuple(int(s) for s in probe_shape)
    self.input_scale = float(input_scale)
    self.stitch_weights = (None if stitch_weights is None
                           else np.asarray(stitch_weights, np.float32))
    if compute_policy not in COMPUTE_POLICIES:
      raise UserError(f"compute policy {compute_policy!r} is not one of "
                      f"{COMPUTE_POLICIES}")
    self.compute_policy = compute_policy
    self.network_config = NetworkConfig.from_model_settings(
        saved, "uniform" if self.stitch_weights is None else "probe",
        compute_policy == "mixed_bfloat16")
    for name, value in self.network_config.model_settings().items():
      setattr(self, name, value)
    self.probe_real = (None if probe_real is None
                       else np.asarray(probe_real, np.float32))
    self.probe_imag = (None if probe_imag is None
                       else np.asarray(probe_imag, np.float32))
    self.network_config.validate(self.probe_shape)
    self.patch_network = build_patch_network(self.network_config,
                                             self.probe_shape)
    self.stitch = layers_lib.StitchPatches(
        self.layout, self.object_shape, method=self.stitch_method,
        pixel_weights=self.stitch_weights, name="stitch")
    if self.probe_input and (self.probe_real is None or
                             self.probe_imag is None):
      raise ValueError("probe_input needs the probe (probe_real, probe_imag)")
    self.refinement = None
    if self.refine_steps:
      if self.probe_real is None or self.probe_imag is None:
        raise ValueError("refine_steps > 0 needs the probe (probe_real, "
                         "probe_imag)")
      self.refinement = refinement_lib.UnrolledRefinement(
          self.layout, self.object_shape, self.probe_real, self.probe_imag,
          self.refine_steps, self.refine_filters,
          groups=self.refine_groups, inertia=self.refine_inertia,
          smoothing=self.refine_smoothing,
          line_search=self.refine_line_search, restart=self.refine_restart,
          noise_model=self.refine_noise_model,
          prior=self.refine_prior,
          prior_every=self.refine_prior_every,
          prior_sigma=(self.refine_prior_sigma_start,
                       self.refine_prior_sigma_end),
          prior_train=self.refine_prior_train,
          data_steps=self.refine_data_steps,
          prior_domain=self.refine_prior_domain,
          prior_amplitude_scale=self.refine_prior_amplitude_scale,
          prior_untied=self.refine_prior_untied,
          name="refinement")
    lo = np.array([self.amplitude_range[0], self.phase_range[0]], np.float32)
    hi = np.array([self.amplitude_range[1], self.phase_range[1]], np.float32)
    self._offset, self._span = lo, hi - lo

  @property
  def num_positions(self):
    return int(self.layout.shape[0])

  def predict_patches(self, amplitudes, training=False):
    """Per-pattern predictions, before stitching.

    Args:
      amplitudes: float32 [B, N, h, w].
      training: BatchNorm mode.

    Returns:
      dict "amplitude", "phase": float32 [B, N, h, w], inside the ranges.
    """
    amplitudes = tf.convert_to_tensor(amplitudes, tf.float32)
    n, (h, w) = self.num_positions, self.probe_shape
    out = self.predict_pattern_patches(tf.reshape(amplitudes, [-1, h, w]),
                                       training)
    return {k: tf.reshape(v, [-1, n, h, w]) for k, v in out.items()}

  def predict_pattern_patches(self, patterns, training=False, probes=None):
    """Per-pattern predictions for patterns of any scans (what training uses).

    Args:
      patterns: float32 [P, h, w] diffraction amplitudes.
      training: BatchNorm mode.
      probes: None (the training probe), or complex64 [P, h, w] each
        pattern's own probe (a family dataset's): its RMS is the pattern's
        input scale, and a network with `probe_input` sees it.

    Returns:
      dict "amplitude", "phase": float32 [P, h, w], inside the ranges.
    """
    y = self.patch_tensor(
        patterns, training, probe=probes,
        scale=None if probes is None else input_scale(probes))
    return {"amplitude": y[..., 0], "phase": y[..., 1]}

  def patch_tensor(self, patterns, training=False, scale=None, probe=None):
    """float32 [..., h, w] patterns -> [..., h, w, 2] (amplitude, phase) patches.

    `scale`: s of the input log(1 + A / s), a float32 scalar tensor (the
    RMS amplitude of a scan's probe) or one per pattern [P]; None: the
    training probe's. `probe`: complex64 [h, w], the scan's probe, or
    [P, h, w] one per pattern, which a network with `probe_input` sees
    (None: the training probe).
    """
    h, w = self.probe_shape
    patterns = tf.convert_to_tensor(patterns, tf.float32)
    lead = tf.shape(patterns)[:-2]
    scale = self.input_scale if scale is None else scale
    scale = tf.reshape(tf.cast(scale, tf.float32), [-1, 1, 1, 1])
    x = tf.math.log1p(tf.reshape(patterns, [-1, h, w, 1]) / scale)
    if self.input_norm == "pattern":
      mean, variance = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
      x = (x - mean) * tf.math.rsqrt(variance + 1e-6)
    if self.probe_input:
      planes = probe_planes(
          tf.complex(self.probe_real, self.probe_imag) if probe is None
          else probe)
      x = tf.concat([x, tf.broadcast_to(tf.reshape(planes, [-1, h, w, 2]),
                                        tf.concat([tf.shape(x)[:1],
                                                   [h, w, 2]], 0))], -1)
    y = self.patch_network(x, training=training)
    y = tf.cast(y, tf.float32) * self._span + self._offset
    return tf.reshape(y, tf.concat([lead, [h, w, 2]], 0))

  def stitch_patches(self, patches):
    """dict of [B, N, h, w] patches -> dict "amplitude", "phase" [B, H, W]."""
    obj = self.stitch(tf.stack([patches["amplitude"], patches["phase"]], -1))
    return {"amplitude": obj[..., 0], "phase": obj[..., 1]}

  def refine(self, obj, amplitudes, physics=None):
    """The refinement steps on a stitched object (identity when K = 0).

    Args:
      obj: dict "amplitude", "phase" float32 [B, H, W].
      amplitudes: float32 [B, N, h, w] the measured amplitudes.
      physics: None (the training geometry) or a scan's
        `refinement.ScanPhysics` (`reconstruct_scan`).

    Returns:
      dict "amplitude", "phase" float32 [B, H, W]; with a physics that
      refines the probe also "probe" complex64 [h, w].
    """
    if self.refinement is None:
      return obj
    start = tf.complex(obj["amplitude"] * tf.cos(obj["phase"]),
                       obj["amplitude"] * tf.sin(obj["phase"]))
    if physics is None:
      refined, probe = self.refinement(start, amplitudes), None
    else:
      refined, probe = self.refinement.refine_scan(start, amplitudes, physics)
    out = {"amplitude": forward.magnitude(refined),
           "phase": forward.phase(refined)}
    if physics is not None and physics.refine_probe:
      out["probe"] = probe
    return out

  def reconstruct(self, amplitudes, training=False):
    """Every stage of a forward pass (what training and evaluation use).

    Args:
      amplitudes: float32 [B, N, h, w].
      training: BatchNorm mode.

    Returns:
      (patches, stitched, refined): dicts "amplitude", "phase" of the
      per-pattern patches [B, N, h, w], the stitched object [B, H, W] and
      the refined object [B, H, W] (the stitched one when K = 0).
    """
    amplitudes = tf.convert_to_tensor(amplitudes, tf.float32)
    n, (h, w) = self.num_positions, self.probe_shape
    patches = tf.reshape(self.patch_tensor(amplitudes, training),
                         [-1, n, h, w, 2])
    # Stitches both channels at once: no split and re-stack on the way.
    obj = self.stitch(patches)
    stitched = {"amplitude": obj[..., 0], "phase": obj[..., 1]}
    return ({"amplitude": patches[..., 0], "phase": patches[..., 1]},
            stitched, self.refine(stitched, amplitudes))

  def reconstruct_scan(self, amplitudes, positions, probe,
                       refine_probe=False, passes=None):
    """The object of one scan of any geometry and probe (inference).

    What the SavedModel's `any_scan` signature runs: the windows, the object
    size, the stitching weights, the input scale and the refinement's
    physics all come from the scan's positions and probe at run time, not
    from the training geometry; only the pattern size (h, w) is the
    model's. With the training geometry it gives `call`'s object.

    Args:
      amplitudes: float32 [1, N, h, w], detector convention.
      positions: float [1, N, 2] (y, x) probe positions in pixels, any
        origin, fractional allowed (rounded: `windows.scan_frame`).
      probe: complex64 [h, w].
      refine_probe: the refinement steps also refine the probe, from their
        second pass over the position groups on
        (`UnrolledRefinement.probe_step`; a model without refinement steps
        returns the probe as given).
      passes: the refinement steps run this many times in a row, each
        pass from the last one's object (and probe), the momenta restarted
        (an int >= 1 or an int32 scalar tensor; None: 1, or PROBE_PASSES
        with `refine_probe`: a probe far from the true one needs many more
        probe steps than one pass of the object's steps holds). More passes
        converge further where one pass of the learned steps does not, as
        more iterations of a solver do (docs/training.md measures it).

    Returns:
      dict "amplitude", "phase": float32 [1, H, W] on the object that just
      covers the positions (the smallest position at (0, 0)); N >= the
      refinement's position groups. With `refine_probe` also "probe":
      complex64 [h, w], the refined probe.
    """
    if passes is None:
      passes = PROBE_PASSES if refine_probe else 1
    return self.scan_stages(amplitudes, positions, probe, refine_probe,
                            passes=passes)[2]

  def scan_stages(self, amplitudes, positions, probe, refine_probe=False,
                  training=False, passes=1):
    """Every stage of `reconstruct_scan` (what a family's training uses).

    Args: as `reconstruct_scan` (`passes` 1 by default);
      `training` the BatchNorm mode.

    Returns:
      (patches, stitched, final, windows): dicts "amplitude", "phase" of
      the patches [1, N, h, w], the stitched and the final object
      [1, H, W] (final also "probe" with `refine_probe`), and the scan's
      `windows.Windows` (`of_corners`).
    """
    amplitudes = tf.convert_to_tensor(amplitudes, tf.float32)
    probe = tf.convert_to_tensor(probe, tf.complex64)
    corners, object_shape = windows_lib.scan_frame(positions[0],
                                                   self.probe_shape)
    windows = windows_lib.Windows.of_corners(corners, object_shape,
                                             self.probe_shape)
    patches = self.patch_tensor(amplitudes[0], training,
                                scale=input_scale(probe), probe=probe)
    weights = (None if self.stitch_weights is None else
               layers_lib.stitch_weights(probe, "probe"))
    obj = windows.normalized_stitch(patches[None], weights, "segment",
                                    channels=1)
    patches = {"amplitude": patches[None, ..., 0],
               "phase": patches[None, ..., 1]}
    stitched = {"amplitude": obj[..., 0], "phase": obj[..., 1]}
    if self.refinement is None:
      final = dict(stitched, probe=probe) if refine_probe else stitched
      return patches, stitched, final, windows
    tf.debugging.assert_greater_equal(
        windows.count, self.refine_groups,
        message=f"the scan has fewer positions than the "
        f"{self.refine_groups} refinement position groups of the model")

    def physics(probe):
      return refinement_lib.ScanPhysics.of_scan(
          corners, object_shape, probe, self.refine_groups, refine_probe)

    if isinstance(passes, int):
      if passes < 1:
        raise ValueError(f"passes={passes} must be >= 1")
      if passes == 1:
        return (patches, stitched,
                self.refine(stitched, amplitudes, physics(probe)), windows)
    else:
      tf.debugging.assert_greater_equal(
          passes, 1, message="passes must be >= 1")

    def one_pass(done, amplitude, phase, probe):
      out = self.refine({"amplitude": amplitude, "phase": phase}, amplitudes,
                        physics(probe))
      return (done + 1, out["amplitude"], out["phase"],
              out.get("probe", probe))

    # Every pass, the first from the stitched object and the given probe,
    # in one loop: the graph holds the steps once.
    _, amplitude, phase, probe = tf.while_loop(
        lambda done, *_: done < passes, one_pass,
        (tf.constant(0), stitched["amplitude"], stitched["phase"], probe))
    final = {"amplitude": amplitude, "phase": phase}
    if refine_probe:
      final["probe"] = probe
    return patches, stitched, final, windows

  def call(self, amplitudes, training=False):
    return self.reconstruct(amplitudes, training)[2]

  def get_config(self):
    config = super().get_config()
    config.update(layout=self.layout.tolist(), object_shape=list(self.object_shape),
                  probe_shape=list(self.probe_shape), input_scale=self.input_scale,
                  stitch_weights=(None if self.stitch_weights is None
                                  else self.stitch_weights.tolist()),
                  compute_policy=self.compute_policy,
                  probe_real=(None if self.probe_real is None
                              else self.probe_real.tolist()),
                  probe_imag=(None if self.probe_imag is None
                              else self.probe_imag.tolist()),
                  **settings.to_json(self.network_config.model_settings()))
    return config


def build_model(config, geometry):
  """A PtychoNet for a NetworkConfig and a physics.geometry.Geometry.

  The encoder-decoder computes in `config.compute_policy` (bfloat16 when
  `config.mixed_precision`); the global Keras policy is left alone.
  """
  config.validate(geometry.probe_shape)
  if config.refine_steps and config.refine_groups > len(geometry.layout):
    raise UserError(f"refine_groups={config.refine_groups} exceeds the scan's "
                    f"{len(geometry.layout)} positions")
  return PtychoNet(layout=geometry.layout, object_shape=geometry.object_shape,
                   probe_shape=geometry.probe_shape,
                   input_scale=input_scale(geometry.probe),
                   stitch_weights=(
                       None if config.stitch_weighting == "uniform" else
                       layers_lib.stitch_weights(geometry.probe,
                                                 config.stitch_weighting)),
                   compute_policy=config.compute_policy,
                   probe_real=np.real(geometry.probe),
                   probe_imag=np.imag(geometry.probe), name="ptychonet",
                   **config.model_settings())
