"""Plug-and-play ptychography: data steps alternated with a denoiser prior.

Rounds of `chunk` iterations on the data each end in one prior step
(`prior.objects.denoise_object`). The data steps (`data_steps`) are LSQML's
(`baselines.lsqml`: the operator's Gaussian or Poisson likelihood; for
noisy data) or the difference map's (`baselines.dm`; for noise-free data,
where DM converges faster than LSQML: on a sparse scan its phase after 300
iterations is ~3 dB better, docs/baselines.md). DM keeps its exit waves
between iterations, and its next object is their overlap projection; a
prior step that changed the object by dO therefore shifts every exit wave
by P dO, so that the next projection moves by dO and DM keeps what its
exit waves held of the data (restarting DM from the exit waves of the
denoised object instead did much worse). In the prior step, the object's
two real images (its real and imaginary parts, or its amplitude and
phase, `domain`) are each scaled to the prior's [0, 1] units on the
illuminated region, denoised at noise level sigma_r, scaled back and put
in place on the illuminated region; the rest of the object is left to the
data. The noise level falls geometrically
over the R rounds, sigma_r = sigma_start * (sigma_end / sigma_start)^(r/(R-1)):
early rounds let the prior shape the object that the data leave open, late
ones only remove what the data steps added.

The prior is any denoiser callable(x float32 [B, H, W], sigma float) ->
[B, H, W] (`denoiser`), by default the package's learned prior
(`ptychonet_tf.prior.load`, trained on images alone, so it serves any
geometry and probe); `prior` names another exported one. The benchmarks
plug BM3D in the same way.

The result records chi and the Fourier error of every data iteration, as
LSQML's; the steps of one round run in one compiled call.
"""
import dataclasses
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf import prior as prior_lib
from ptychonet_tf.prior import objects as prior_objects
from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.physics import layouts
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError

DOMAINS = prior_objects.DOMAINS
# What the data steps between the prior steps are.
DATA_STEPS = ("lsqml", "dm")


@dataclasses.dataclass(frozen=True)
class PnPConfig:
  """Settings of a plug-and-play run.

  Attributes:
    iterations: data iterations in all.
    data_steps: "lsqml" (LSQML's likelihood steps, `noise_model` and the
      LSQML settings below) or "dm" (difference-map iterations with DM's
      defaults; noise-free data).
    chunk: data iterations per round (one prior step ends each round).
    sigma_start, sigma_end: the prior's noise level in the first and the
      last round, on images scaled to [0, 1].
    domain: "complex" (denoise the real and imaginary parts) or
      "amplitude_phase".
    first_sigma_scale: the first image of `domain` (the real part, or the
      amplitude) is denoised at sigma_r times this, the second at sigma_r.
      The defaults (sigma 0.4 -> 0.2, amplitude_phase, first_sigma_scale
      2.0, object_reg 1.0, the Poisson noise model) did best among the
      settings tried with the shipped prior on scans of training
      photographs at 1e4 photons per pattern (docs/baselines.md).
    prior: an exported prior (a train_prior --export_dir); None: the
      package's shipped prior.
    denoiser: a callable(x float32 [B, H, W], sigma float32 [B]) ->
      [B, H, W] used instead of a prior (e.g. BM3D in the benchmarks); it
      runs eagerly.
    noise_model, batch_size, grouping, object_reg, probe_reg, step_reg,
      max_step: the LSQML data steps' settings (`lsqml.LSQMLConfig`).
    refine_probe, probe_start, init, seed, jit_compile, progress: the data
      steps' settings, of either method.
  """
  iterations: int = 200
  data_steps: str = "lsqml"
  chunk: int = 10
  sigma_start: float = 0.4
  sigma_end: float = 0.2
  domain: str = "amplitude_phase"
  first_sigma_scale: float = 2.0
  prior: Optional[str] = None
  denoiser: Any = None
  noise_model: str = "poisson"
  batch_size: int = 10
  grouping: str = "sparse"
  object_reg: float = 1.0
  probe_reg: float = 0.1
  step_reg: float = 1e-3
  max_step: float = 10.0
  refine_probe: bool = False
  probe_start: int = 10
  init: str = "ones"
  seed: int = 0
  jit_compile: bool = True
  progress: Optional[bool] = None

  def __post_init__(self):
    if self.data_steps not in DATA_STEPS:
      raise UserError(f"PnP data_steps {self.data_steps!r} is not one of "
                      f"{DATA_STEPS}")
    # The data steps' settings are their method's, checked there.
    self.data_config()
    if not 0 < self.sigma_end <= self.sigma_start:
      raise UserError(f"PnP noise levels sigma_start={self.sigma_start} and "
                      f"sigma_end={self.sigma_end} must satisfy "
                      f"0 < sigma_end <= sigma_start")
    if not self.first_sigma_scale > 0:
      raise UserError(f"PnP first_sigma_scale={self.first_sigma_scale} must "
                      f"be > 0")
    if self.domain not in DOMAINS:
      raise UserError(f"PnP domain {self.domain!r} is not one of {DOMAINS}")

  def data_config(self):
    """The config of the data steps' method (`lsqml.LSQMLConfig` or
    `dm.DMConfig`): this config's settings of the same names."""
    config_class = (lsqml.LSQMLConfig if self.data_steps == "lsqml" else
                    dm.DMConfig)
    fields = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{
        f.name: getattr(self, f.name) for f in dataclasses.fields(self)
        if f.name in fields})

  @property
  def rounds(self):
    return -(-self.iterations // self.chunk)

  def sigma(self, round_index):
    """The prior's noise level in round `round_index` (0-based)."""
    if self.rounds == 1:
      return float(self.sigma_end)
    ratio = self.sigma_end / self.sigma_start
    return float(self.sigma_start * ratio ** (round_index /
                                              (self.rounds - 1)))


class PriorRounds:
  """Ends every compiled chunk of a data-step method in a prior step.

  Mixed into the data steps' reconstructor (`PnP`: LSQML, `PnPDM`: DM); its
  `config` is the data steps' own (`PnPConfig.data_config`), `pnp_config`
  the PnPConfig.
  """

  name = "pnp"
  config_class = PnPConfig

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    self.pnp_config = config or PnPConfig()
    super().__init__(amplitudes, probe, layout, object_shape,
                     self.pnp_config.data_config())
    self.denoiser = self.pnp_config.denoiser
    step = self._denoise
    if self.denoiser is None:
      # bfloat16 where the CPU computes it natively (machine.fast_policy).
      self.denoiser = prior_lib.load(self.pnp_config.prior,
                                     dtype=machine.fast_policy())
      # The learned prior is TensorFlow: its step runs as a graph (not XLA:
      # TensorFlow's own convolutions are several times faster on CPU).
      step = tf.function(step)
    self._step = step
    # The prior acts on the lit region of each scan's probe.
    self._lit = np.stack([
        layouts.illuminated_region(self.layout, self.object_shape, probe)
        for probe in self.probe]).astype(np.float32)
    self._round = 0

  @classmethod
  def variant(cls, config):
    """The class whose data steps `config` asks for."""
    if config is None:
      return cls
    return PnPDM if config.data_steps == "dm" else PnP

  def initial_state(self, obj, probe):
    self._round = 0
    return super().initial_state(obj, probe)

  def iterate_chunk(self, state, num, refine):
    state, chi, err, key = super().iterate_chunk(state, num, refine)
    sigma = self.pnp_config.sigma(self._round)
    self._round += 1
    obj = self.state_object(state)
    return self.with_object(state, self.prior_step(obj, sigma)), chi, err, key

  def with_object(self, state, obj):
    """The data steps' state with its object replaced."""
    raise NotImplementedError

  def prior_step(self, obj, sigma):
    """The objects [B, H, W] after one denoising at noise level sigma."""
    return self._step(tf.convert_to_tensor(obj, tf.complex64),
                      tf.constant(sigma, tf.float32))

  def _denoise(self, obj, sigma):
    config = self.pnp_config
    return prior_objects.denoise_object(self.denoiser, obj, self._lit, sigma,
                                        config.domain,
                                        config.first_sigma_scale)


class PnP(PriorRounds, lsqml.LSQML):
  """Plug-and-play with LSQML data steps (module doc)."""

  def with_object(self, state, obj):
    return (obj, state[1])


class PnPDM(PriorRounds, dm.DifferenceMap):
  """Plug-and-play with difference-map data steps (module doc)."""

  def with_object(self, state, obj):
    psi_hat, old, probe, norm = state
    # The exit waves shift with the object: their next overlap projection
    # moves by the prior's change, and DM keeps what they held beyond it.
    shift = self.operator.spectra(tf.convert_to_tensor(obj, tf.complex64) -
                                  old, probe)
    return (psi_hat + shift, obj, probe, norm)
