"""Physics-unrolled refinement: K learned, accelerated gradient steps on the object.

PtychoNet's stitched object O_0 is a first guess. `UnrolledRefinement` runs
K differentiable iterations on the whole object with the known probe P
(`--refine_steps=K`; K = 0 is the paper's PtychoNet), inside the Keras model
and hence inside its SavedModel. Step k (0-based) is a Nesterov-accelerated,
preconditioned gradient step on the amplitude misfit of one group of
positions, L_g(O) = 1/2 sum_{j in g} || |F(P O_j)| - A_j ||^2:

  Y_k     = O_k + mu_k (O_k - O_{k-1})                   (momentum, O_{-1} = O_0)
  G_k     = sum_{j in g} conj(P) F^-1[F(P Y_kj) - A_j F(P Y_kj) / |F(P Y_kj)|]
  D_k     = -G_k / (sum_{j in g} |P|^2 + e_g)             (the error-reduction step)
  O_{k+1} = Y_k + s_k D_k + C_k(Y_k, D_k)

The positions are split into `groups` interleaved groups (group g: every
groups-th position from the g-th) and step k uses group k mod groups
(`--refine_groups`). With one group every step sees all positions (the
parallel, "full-batch" step). With several, a step costs 1/groups of a full
one (its windows, FFTs and stitch cover 1/groups of the positions) and the
object moves after each group, as ePIE and LSQML's position batches do: on
the dense Fermat scans that converges much faster per FFT (docs/training.md
measures it), so K steps of G groups are worth far more than K / G full
ones.

G_k is the gradient of L_g (with the plain, unnormalised FFT of the solvers'
unshifted frame), and D_k is LSQML's preconditioned object direction of the
Gaussian exit-wave update: every piece is a method of the package's one
ptychography operator (`physics.operator.Ptychography`: `spectra`,
`exit_wave_update`, `solve_object`, `illumination`), the operator DM, ePIE
and LSQML call. With one group, s_k = 1 and mu_k = 0 a step is the parallel
error-reduction (alternating projection) update
O <- sum_j conj(P) Pi_F(P O_j) / sum_j |P|^2, up to the inertia e
(tests/test_refinement.py checks it, and a grouped step, against numpy).

Learned per step: the momentum mu_k (initialised to Nesterov's k / (k + 3),
capped at MOMENTUM_LIMIT), the step size s_k (initialised to 1) and, when
`filters` > 0, a small CNN correction C_k: two 3x3 convolutions on the real
and imaginary parts of Y_k and D_k (4 channels -> `filters` -> 2), whose last
layer starts at zero. At initialisation the refinement is therefore plain
accelerated error reduction; training tunes it end to end
(docs/training.md measures both).

The inertia e_g = `inertia` * max(sum_{j in g} |P|^2) keeps pixels the
group's probe windows barely reach where they are: their gradient is ~0 and
so is their step. On noisy data a larger inertia (`--refine_inertia`, e.g.
0.3) damps the steps where few photons fall, so the object stays nearer
the network's estimate there instead of fitting the noise
(docs/training.md measures it at 1e4 photons per pattern).

With a learned image prior (`prior`: the package's shipped prior or an
exported one, `ptychonet_tf.prior`), every `prior_every`-th step (default:
one per pass over the position groups) ends in a prior step,
O <- D_sigma_p(O) on the lit region (`prior.objects.denoise_object`: the
real and imaginary parts, or with `prior_domain="amplitude_phase"` its
amplitude and phase, scaled to the prior's units, denoised at noise level
sigma_p (the first image at `prior_amplitude_scale` times it), scaled
back), after which the momentum restarts. The noise
levels sigma_p are learned (stored as log sigma, initialised geometric from
`prior_sigma`); the denoiser is a sub-layer, so its weights are the model's
and the SavedModel's, frozen unless `prior_train`. The physics steps move
the object towards the data, the prior steps towards what images look
like: plug-and-play (`baselines/pnp.py`) unrolled and tuned end to end.

The physics a step runs on is a `ScanPhysics`: the operator, the probe and
their sums. The layer's own is that of its training geometry, constants
computed once; `refine_scan` runs the same learned steps on the physics of
any other scan, built inside a graph from its positions and probe
(`ScanPhysics.of_scan`: the SavedModel's `any_scan` signature). With
`refine_probe` such a physics also carries a probe that the steps refine:
from the second pass over the groups on, each object step is followed by
LSQML's preconditioned probe step on the same group (`probe_step`, not
learned), and the norms are recomputed from the changing probe.

With `data_steps="dm"` the K steps are difference-map iterations instead
(one position group): the layer carries the exit waves' spectra psi
between steps, each step projects them onto an object (DM's overlap
projection, with the preconditioner floor above and the previous object
where no probe reaches) and moves them by s_k times DM's update
(`Ptychography.difference_map_update`; s_k = 1 is DM). A prior step that
changes the object by dO shifts the exit waves by P dO, as plug-and-play
with DM's data steps does (`baselines/pnp.py`), so DM keeps its memory of
the data. On noise-free scans of few positions DM's phase converges far
faster than error reduction (docs/training.md); the momenta and the
restart do not apply (the momenta are not trained).

With `smoothing` = k > 0, the refined object then passes a learned k x k
linear filter S (one kernel for its real and imaginary parts, reflected at
the border), initialised to the identity, O_out = S * O_K: on noisy data
training makes it the smoothing that best trades resolution for noise.
S = W / sum(W) keeps the object's mean (a free kernel drifted to a sum of
6 in one epoch), and the layer stores D = (W - identity) / SMOOTHING_GAIN,
so that Adam moves W SMOOTHING_GAIN times faster than the step sizes (one
short end-to-end epoch at the refinement's learning rate barely moved an
identity kernel stored as it is).
"""
import collections
import functools

import numpy as np
import tensorflow as tf
import keras

from ptychonet_tf import prior as prior_lib
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib
from ptychonet_tf.prior import objects as prior_objects
from ptychonet_tf.utils import machine


# The initial momenta stop growing here: with position groups, Nesterov's
# k / (k + 3) beyond ~0.9 made the steps diverge on the small dense scans
# (docs/training.md).
MOMENTUM_LIMIT = 0.85

# The smoothing kernel is stored divided by this (see the module doc).
SMOOTHING_GAIN = 2.0

# What the K steps are: accelerated gradient (error-reduction) steps, or
# difference-map iterations.
DATA_STEPS = ("gradient", "dm")

# The probe steps' regulariser relative to max(sum_j |O_j|^2) (LSQML's
# default probe_reg).
PROBE_INERTIA = 0.1


def initial_momentum(steps):
  """Nesterov's momentum schedule k / (k + 3), k = 0 .. steps - 1, capped at
  MOMENTUM_LIMIT."""
  k = np.arange(steps, dtype=np.float32)
  return np.minimum(k / (k + 3.0), np.float32(MOMENTUM_LIMIT))



class ScanPhysics(collections.namedtuple(
    "ScanPhysics", ["operator", "probe", "norms", "lit", "refine_probe"],
    defaults=[False])):
  """The physics the steps run on: one scan geometry and its probe.

  Attributes:
    operator: `physics.operator.Ptychography` with the layer's position
      groups (built from a layout, or `Ptychography.of_scan` in a graph).
    probe: complex64 [h, w] (numpy or tensor).
    norms: per group, float32 [H, W] its illumination sum_j |P|^2, the
      preconditioner's norm; None: computed at every step (from a probe
      that changes).
    lit: float32 [H, W], the region the prior steps act on
      (`Ptychography.lit_region`).
    refine_probe: the steps also refine the probe (see `probe_step`).
  """

  @classmethod
  def of_operator(cls, operator, probe, refine_probe=False):
    """The physics of an operator and a probe complex64 [h, w]: the norms of
    its position groups (none when the probe is refined) and its lit
    region."""
    probe = tf.convert_to_tensor(probe, tf.complex64)
    norms = (None if refine_probe else
             [operator.illumination(probe, g)
              for g in range(len(operator.groups))])
    return cls(operator, probe, norms, operator.lit_region(probe),
               bool(refine_probe))

  @classmethod
  def of_scan(cls, corners, object_shape, probe, groups, refine_probe=False):
    """The physics of a scan given as tensors (corners int32 [N, 2],
    object_shape int32 [2], probe complex64 [h, w]), inside a graph."""
    probe = tf.convert_to_tensor(probe, tf.complex64)
    return cls.of_operator(
        operator_lib.Ptychography.of_scan(corners, object_shape, probe.shape,
                                          groups), probe, refine_probe)


@keras.saving.register_keras_serializable(package="ptychonet_tf")
class UnrolledRefinement(keras.layers.Layer):
  """K learned accelerated gradient steps on complex objects (see module doc).

  Call inputs:
    obj: complex64 [B, H, W] the starting objects.
    amplitudes: float32 [B, N, h, w] measured amplitudes, detector convention
      (zero frequency at (h//2, w//2), unitary DFT: `physics.forward`).
  Call output:
    complex64 [B, H, W] the refined objects.

  Args:
    layout: int [N, 4] (top, bottom, left, right).
    object_shape: (H, W).
    probe_real, probe_imag: float [h, w] the known probe's parts (lists in
      the config, so the layer serialises to JSON).
    steps: K >= 1.
    groups: position groups; step k uses group k mod groups (1 = every step
      sees all positions). 1 <= groups <= N.
    filters: width of each step's CNN correction; 0 = none.
    inertia: relative preconditioner floor e / max(sum_j |P|^2).
    smoothing: odd size k of the learned output filter; 0 = none.
    line_search: scale each step D by LSQML's step length, the alpha that
      best fits the group's exit-wave update chi with alpha P D_j
      (`operator.step_lengths`), before the learned step size.
    restart: drop the momentum after a step whose group misfit (at the
      momentum point) exceeds that group's misfit at its previous visit
      (function-value adaptive restart, O'Donoghue and Candes 2015): the
      next step starts from the object without extrapolating.
    prior: "" (none), "default" (the package's shipped image prior) or the
      folder of an exported prior (`python -m ptychonet_tf.train_prior`):
      its denoiser runs as a prior step after every `prior_every` steps
      (see the module doc); its weights become the layer's (and the
      SavedModel's).
    prior_every: steps between prior steps; 0 = `groups` (one prior step
      per pass over the positions).
    prior_sigma: (first, last) noise levels of the prior steps at
      initialisation, geometric in between; learned end to end.
    prior_train: also train the denoiser's weights end to end (else they
      stay as loaded).
    prior_untied: give every prior step a denoiser of its own (each loaded
      from the same prior, then trained apart with `prior_train`), as an
      unrolled network unties its layers: each step's error differs in
      level and structure. Costs no time per call; the weights grow by the
      number of prior steps.
    prior_domain: what the prior steps denoise: "complex" (the real and
      imaginary parts) or "amplitude_phase".
    prior_amplitude_scale: the first image of `prior_domain` is denoised at
      this times the step's noise level.
    data_steps: "gradient" (the accelerated error-reduction steps) or "dm"
      (difference-map iterations; needs groups = 1; see the module doc).
    noise_model: the likelihood the gradient steps lower
      (`Ptychography.exit_wave_update`): "gaussian" (the amplitude least
      squares, the modulus projection) or "poisson" (unbiased at low
      counts, where the mean of sqrt(counts) falls short of the mean
      amplitude and the Gaussian steps shrink the object).
    jit_compile: run the K steps as one XLA-compiled function (also in the
      exported SavedModel). On CPU this makes the steps faster (the window
      gather and scatter fuse); plain TensorFlow runs it as is, TF Serving
      needs --xla_cpu_compilation_enabled=true (docs/serving.md). False runs
      the steps as ordinary TensorFlow ops; so do steps with CNN corrections
      (`filters` > 0), whose weights would lose their gradients in a
      compiled function first traced outside a GradientTape.
  """

  def __init__(self, layout, object_shape, probe_real, probe_imag, steps,
               filters=0, inertia=1e-3, jit_compile=True, groups=1,
               smoothing=0, prior="", prior_every=0, prior_sigma=(0.1, 0.01),
               prior_train=False, line_search=False, restart=False,
               data_steps="gradient", prior_domain="complex",
               prior_amplitude_scale=1.0, noise_model="gaussian",
               prior_untied=False, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if int(steps) < 1:
      raise ValueError(f"refinement steps {steps} must be >= 1")
    if int(filters) < 0:
      raise ValueError(f"refinement filters {filters} must be >= 0")
    if float(inertia) <= 0:
      raise ValueError(f"refinement inertia {inertia} must be > 0")
    if int(smoothing) < 0 or int(smoothing) % 2 == 0 and int(smoothing):
      raise ValueError(f"refinement smoothing {smoothing} must be 0 or an "
                       f"odd kernel size")
    if not 1 <= int(groups) <= len(layout):
      raise ValueError(f"refinement position groups {groups} must be in "
                       f"[1, {len(layout)}] (the scan's positions)")
    if data_steps not in DATA_STEPS:
      raise ValueError(f"refinement data steps {data_steps!r} are not one "
                       f"of {DATA_STEPS}")
    if data_steps == "dm" and (int(groups) != 1 or int(filters) or
                               line_search or restart):
      raise ValueError("refinement data steps 'dm' take one position group "
                       "and no corrections, line search or restart")
    self.data_steps = data_steps
    if noise_model not in operator_lib.NOISE_MODELS or (
        data_steps == "dm" and noise_model != "gaussian"):
      raise ValueError(f"refinement noise model {noise_model!r} must be one "
                       f"of {operator_lib.NOISE_MODELS} ('gaussian' with "
                       f"'dm' data steps)")
    self.noise_model = noise_model
    if prior_domain not in prior_objects.DOMAINS or not (
        float(prior_amplitude_scale) > 0):
      raise ValueError(f"prior domain {prior_domain!r} must be one of "
                       f"{prior_objects.DOMAINS} and prior_amplitude_scale="
                       f"{prior_amplitude_scale} > 0")
    self.prior_domain = prior_domain
    self.prior_amplitude_scale = float(prior_amplitude_scale)
    self.layout = np.asarray(layout, np.int32)
    self.object_shape = tuple(int(s) for s in object_shape)
    self.probe_real = np.asarray(probe_real, np.float32)
    self.probe_imag = np.asarray(probe_imag, np.float32)
    self.steps = int(steps)
    self.filters = int(filters)
    self.inertia = float(inertia)
    self.jit_compile = bool(jit_compile)
    self.groups = int(groups)
    self.smoothing = int(smoothing)
    self.line_search = bool(line_search)
    self.restart = bool(restart)
    self.prior = str(prior or "")
    self.prior_every = int(prior_every) or self.groups
    self.prior_sigma = tuple(float(s) for s in prior_sigma)
    self.prior_train = bool(prior_train)
    if self.prior_every < 1 or not 0 < self.prior_sigma[1] <= self.prior_sigma[0]:
      raise ValueError(f"prior_every={prior_every} must be >= 0 and "
                       f"prior_sigma={prior_sigma} (first, last) with "
                       f"0 < last <= first")
    self._compiled = None
    # A cache of compiled functions, not state: kept out of Keras' (and the
    # SavedModel's) tracking.
    object.__setattr__(self, "_segments", {})
    probe = (self.probe_real + 1j * self.probe_imag).astype(np.complex64)
    # The training geometry's physics, its sums computed once (constants,
    # kept out of Keras' tracking).
    object.__setattr__(self, "physics", ScanPhysics.of_operator(
        operator_lib.Ptychography(
            self.layout, self.object_shape, probe.shape,
            layouts.interleaved_groups(len(self.layout), self.groups)),
        probe))
    self.prior_untied = bool(prior_untied)
    # Sub-layers are attributes, never list items: the training checkpoints
    # (tf.train.Checkpoint) follow a Keras layer's attributes but not its
    # lists, so layers kept in a list were missing from them. `denoiser` is
    # the first prior step's (the only one unless untied; the name older
    # checkpoints hold), `denoiser_K` the K-th untied one's; `denoisers` and
    # `corrections` list them.
    self.denoiser = None
    self.prior_steps = 0
    if self.prior:
      self.prior_steps = self.steps // self.prior_every
      loaded = []
      for k in range(self._denoiser_count):
        # bfloat16 where the CPU computes it natively (machine.fast_policy).
        loaded.append(prior_lib.load(
            None if self.prior == "default" else self.prior,
            dtype=machine.fast_policy(), trainable=self.prior_train,
            name=f"prior_denoiser{k or ''}"))
        # Each variable's own flag decides what an enclosing model trains
        # (the layer's flag does not reach its sub-layers' variables).
        for variable in loaded[-1].weights:
          variable.trainable = self.prior_train
      self.denoiser = loaded[0]
      for k, layer in enumerate(loaded[1:], 1):
        setattr(self, f"denoiser_{k}", layer)
    for k in range(self.filters and self.steps):
      setattr(self, f"correction_{k}", keras.Sequential([
          keras.layers.Conv2D(self.filters, 3, padding="same",
                              activation="relu", dtype="float32"),
          keras.layers.Conv2D(2, 3, padding="same", kernel_initializer="zeros",
                              dtype="float32")], name=f"correction{k}"))

  @property
  def _denoiser_count(self):
    """How many denoisers the prior steps hold: none without a prior, else
    one shared, or one per prior step if untied (at least one)."""
    if not self.prior:
      return 0
    return max(self.prior_steps, 1) if self.prior_untied else 1

  @property
  def denoisers(self):
    """The prior steps' denoisers: one shared, or one per step if untied."""
    count = self._denoiser_count
    return [self.denoiser, *(getattr(self, f"denoiser_{k}")
                             for k in range(1, count))] if count else []

  @property
  def corrections(self):
    """The steps' CNN corrections, one per step (none without `filters`)."""
    return [getattr(self, f"correction_{k}")
            for k in range(self.filters and self.steps)]

  def build(self, input_shape=None):
    # DM's steps have no momentum: kept (one set of weights for both kinds
    # of steps), not trained.
    self.momentum = self.add_weight(
        name="momentum", shape=(self.steps,),
        initializer=keras.initializers.Constant(initial_momentum(self.steps)),
        trainable=self.data_steps == "gradient")
    self.step_size = self.add_weight(
        name="step_size", shape=(self.steps,),
        initializer=keras.initializers.Constant(1.0))
    self.smoothing_delta = None
    if self.smoothing:
      self.smoothing_delta = self.add_weight(
          name="smoothing_delta", shape=(self.smoothing, self.smoothing),
          initializer="zeros")
    for correction in self.corrections:
      correction.build((None, *self.object_shape, 4))
    self.prior_log_sigma = None
    if self.prior_steps:
      first, last = self.prior_sigma
      levels = first * (last / first) ** (
          np.arange(self.prior_steps) / max(self.prior_steps - 1, 1))
      self.prior_log_sigma = self.add_weight(
          name="prior_log_sigma", shape=(self.prior_steps,),
          initializer=keras.initializers.Constant(np.log(levels)))
    self.built = True

  def direction(self, obj, amplitudes, method="segment", group=0,
                physics=None, with_misfit=False):
    """The error-reduction step D = -G / (sum_j |P|^2 + e) of one position
    group, complex64 [B, H, W] (with `line_search` times its step length).

    Args:
      obj: complex64 [B, H, W].
      amplitudes: float32 [B, N_g, h, w], the group's patterns in the
        operator's frame (`Ptychography.loop_amplitudes_tensor`).
      method: the stitch method of sum_j (`Windows.stitch`): the compiled
        steps use "slices" (in place under XLA).
      group: the group's index.
      physics: a `ScanPhysics`; None: the layer's own geometry.
      with_misfit: also return the group's misfit at `obj` (float32 [B],
        no gradient), for the restart.
    """
    physics = physics or self.physics
    op = physics.operator
    probe = tf.convert_to_tensor(physics.probe, tf.complex64)
    spectra = op.spectra(obj, probe, group)
    update = op.exit_wave_update(spectra, amplitudes, self.noise_model)
    norm = (None if physics.norms is None else
            tf.convert_to_tensor(physics.norms[group]))
    step = op.solve_object(update, probe, self.inertia, group, norm=norm,
                           method=method)
    if self.line_search:
      alpha, _ = operator_lib.step_lengths(
          update, probe * op.views(step, group))
      step *= forward.real_to_complex(alpha)[:, None, None]
    if with_misfit:
      return step, tf.stop_gradient(op.misfit(spectra, amplitudes))
    return step

  @staticmethod
  def probe_step(obj, amplitudes, group, physics):
    """The probe after one refinement step of it on a group's positions.

    P + dP, dP = sum_j conj(O_j) chi_j / (sum_j |O_j|^2 + d) the
    preconditioned probe direction of LSQML (`Ptychography.solve_probe`,
    d = PROBE_INERTIA * max(sum_j |O_j|^2)), chi the Gaussian exit-wave
    update at the current object; averaged over the batch (one scan: its
    own). Not learned: step 1, as LSQML's unit step.

    Args:
      obj: complex64 [B, H, W] the object after the group's object step.
      amplitudes: float32 [B, N_g, h, w], the group's patterns, loop frame.
      group: the group's index.
      physics: the scan's `ScanPhysics`.

    Returns:
      complex64 [h, w].
    """
    op = physics.operator
    probe = tf.convert_to_tensor(physics.probe, tf.complex64)
    views = op.views(obj, group)
    chi = op.exit_wave_update(op.propagate(probe * views), amplitudes)
    return probe + tf.reduce_mean(
        op.solve_probe(chi, views, PROBE_INERTIA), axis=0)

  def refine_scan(self, obj, amplitudes, physics):
    """The K steps on a scan of any geometry and probe (`ScanPhysics.of_scan`).

    The learned step sizes, momenta, corrections, prior levels and output
    filter are the layer's; the positions, object size and probe are the
    scan's. Runs as ordinary TensorFlow ops (XLA needs static shapes).

    Args:
      obj: complex64 [B, H, W] the scan's starting objects.
      amplitudes: float32 [B, N, h, w], detector convention.
      physics: the scan's `ScanPhysics`.

    Returns:
      (complex64 [B, H, W] objects, complex64 [h, w] the probe: refined
      when `physics.refine_probe`, from the second pass over the position
      groups on, else the scan's).
    """
    return self._run(tf.cast(obj, tf.complex64),
                     tf.cast(amplitudes, tf.float32), *self._learned(),
                     physics=physics)

  def _learned(self):
    """(momentum, step_size, kernel, sigma): the learned scalars as tensors."""
    momentum = tf.convert_to_tensor(self.momentum)
    step_size = tf.convert_to_tensor(self.step_size)
    kernel = (tf.zeros([0, 0]) if self.smoothing_delta is None else
              self._kernel(tf.convert_to_tensor(self.smoothing_delta)))
    sigma = (tf.zeros([0]) if self.prior_log_sigma is None else
             tf.exp(tf.convert_to_tensor(self.prior_log_sigma)))
    return momentum, step_size, kernel, sigma

  def call(self, obj, amplitudes):
    obj = tf.cast(obj, tf.complex64)
    amplitudes = tf.cast(amplitudes, tf.float32)
    # The learned scalars go in as arguments, not as captured variables: a
    # compiled function first traced outside a GradientTape (e.g. by the
    # model's build call) would otherwise give them no gradient.
    momentum, step_size, kernel, sigma = self._learned()
    # (Captured Keras sub-layers lose their gradients the same way, so steps
    # with CNN corrections or a trained denoiser run as ordinary ops.)
    if self.jit_compile and not self.corrections and not self.prior_train:
      if self.prior_steps:
        # The physics between prior steps compiles; the denoiser runs as
        # ordinary ops (TensorFlow's own convolutions are several times
        # faster on CPU than XLA's).
        return self._steps(obj, amplitudes, momentum, step_size, kernel,
                           sigma, method="slices",
                           segment=self._compiled_segment)
      if self._compiled is None:
        self._compiled = tf.function(
            functools.partial(self._steps, method="slices"), jit_compile=True)
      return self._compiled(obj, amplitudes, momentum, step_size, kernel,
                            sigma)
    return self._steps(obj, amplitudes, momentum, step_size, kernel, sigma)

  def _compiled_segment(self, obj, previous, group_amplitudes, momentum,
                        step_size, start, method):
    """`_segment` as an XLA-compiled function, one per (first group, length)."""
    key = (start % self.groups, int(momentum.shape[0]), method)
    if key not in self._segments:
      self._segments[key] = tf.function(
          functools.partial(self._data_segment, start=start, method=method),
          jit_compile=True)
    return self._segments[key](obj, previous, group_amplitudes, momentum,
                               step_size)

  def _identity(self):
    identity = np.zeros([self.smoothing] * 2, np.float32)
    identity[self.smoothing // 2, self.smoothing // 2] = 1.0
    return tf.constant(identity)

  def _kernel(self, delta):
    weights = self._identity() + SMOOTHING_GAIN * delta
    return weights / tf.reduce_sum(weights)

  @property
  def smoothing_kernel(self):
    """The learned output filter S, float32 numpy [k, k] (None without)."""
    if self.smoothing_delta is None:
      return None
    return self._kernel(tf.convert_to_tensor(self.smoothing_delta)).numpy()

  def set_smoothing_kernel(self, kernel):
    """Sets the output filter S to `kernel` [k, k] (scaled to sum 1)."""
    kernel = np.asarray(kernel, np.float32)
    self.smoothing_delta.assign(
        (kernel / kernel.sum() - self._identity().numpy()) / SMOOTHING_GAIN)

  def smooth(self, obj, kernel):
    """O filtered by the k x k `kernel` (real and imaginary parts alike,
    reflected at the border), complex64 [B, H, W]."""
    half = self.smoothing // 2
    parts = tf.concat([tf.math.real(obj), tf.math.imag(obj)], 0)[..., None]
    parts = tf.pad(parts, [[0, 0], [half, half], [half, half], [0, 0]],
                   mode="REFLECT")
    out = tf.nn.conv2d(parts, kernel[:, :, None, None], 1, "VALID")[..., 0]
    real, imag = tf.split(out, 2, axis=0)
    return tf.complex(real, imag)

  def _steps(self, obj, amplitudes, momentum, step_size, kernel, sigma,
             method="segment", segment=None):
    """The K steps on the layer's own geometry: the refined objects."""
    return self._run(obj, amplitudes, momentum, step_size, kernel, sigma,
                     method, segment)[0]

  def _run(self, obj, amplitudes, momentum, step_size, kernel, sigma,
           method="segment", segment=None, physics=None):
    """The K steps (prior steps between segments of physics steps) on
    `physics` (None: the layer's own geometry): (objects, probe)."""
    physics = physics or self.physics
    # Into the operator's frame once: every step is a plain FFT.
    amplitudes = physics.operator.loop_amplitudes_tensor(amplitudes)
    group_amplitudes = [physics.operator.group_slice(amplitudes, g)
                        for g in range(self.groups)]
    if segment is None:
      segment = functools.partial(self._data_segment, physics=physics)
    every = self.prior_every if self.prior_steps else self.steps
    dm = self.data_steps == "dm"
    # What the steps carry besides the object: the object before the last
    # step (the momentum's), or DM's exit waves' spectra.
    previous = (physics.operator.spectra(obj, physics.probe, 0) if dm else
                obj)
    for start in range(0, self.steps, every):
      stop = min(start + every, self.steps)
      obj, previous, probe = segment(obj, previous, group_amplitudes,
                                     momentum[start:stop],
                                     step_size[start:stop], start=start,
                                     method=method)
      if physics.refine_probe:
        physics = physics._replace(probe=probe)
        segment = functools.partial(self._data_segment, physics=physics)
      if self.prior_steps and stop % every == 0:
        k = stop // every - 1
        denoised = prior_objects.denoise_object(
            self.denoisers[k if self.prior_untied else 0], obj, physics.lit,
            sigma[k], self.prior_domain, self.prior_amplitude_scale)
        if dm:
          # The exit waves move with the object (module doc).
          previous += physics.operator.spectra(denoised - obj,
                                               physics.probe, 0)
        else:
          previous = denoised  # the momentum restarts after a prior step
        obj = denoised
    if self.smoothing:
      obj = self.smooth(obj, kernel)
    return obj, tf.convert_to_tensor(physics.probe, tf.complex64)

  def _data_segment(self, *args, **kwargs):
    """`_segment` or `_dm_segment`, as `data_steps` says."""
    if self.data_steps == "dm":
      return self._dm_segment(*args, **kwargs)
    return self._segment(*args, **kwargs)

  def _dm_segment(self, obj, waves, group_amplitudes, momentum, step_size,
                  start, method="segment", physics=None):
    """DM iterations start .. start + len(step_size) - 1 (one group).

    Returns:
      (the object projected from the exit waves before the last update,
      the exit waves' spectra after it, probe).
    """
    del momentum  # DM's steps have none
    physics = physics or self.physics
    op = physics.operator
    amplitudes = group_amplitudes[0]
    step_size = forward.real_to_complex(step_size)
    for i in range(int(step_size.shape[0])):
      probe = tf.convert_to_tensor(physics.probe, tf.complex64)
      norm = (None if physics.norms is None else
              tf.convert_to_tensor(physics.norms[0]))
      obj = op.solve_object(op.backpropagate(waves), probe, self.inertia, 0,
                            norm=norm, previous=obj, method=method)
      delta, _ = op.difference_map_update(obj, waves, probe, amplitudes,
                                          group=0)
      waves += step_size[i] * delta
      if physics.refine_probe and start + i >= 1:
        physics = physics._replace(probe=self.probe_step(
            obj, amplitudes, 0, physics))
    return obj, waves, tf.convert_to_tensor(physics.probe, tf.complex64)

  def _segment(self, obj, previous, group_amplitudes, momentum, step_size,
               start, method="segment", physics=None):
    """Physics steps start .. start + len(momentum) - 1.

    Returns:
      (object, the object before the last step for the momentum, probe:
      refined when `physics.refine_probe`).
    """
    physics = physics or self.physics
    momentum = forward.real_to_complex(momentum)
    step_size = forward.real_to_complex(step_size)
    last_misfit = {}  # group -> its misfit at its previous visit
    for i in range(int(momentum.shape[0])):
      k = start + i
      ahead = obj + momentum[i] * (obj - previous)
      previous = obj
      group = k % self.groups
      step = self.direction(ahead, group_amplitudes[group], method, group,
                            physics, with_misfit=self.restart)
      if self.restart:
        step, misfit = step
      obj = ahead + step_size[i] * step
      if self.restart:
        if group in last_misfit:
          worse = (misfit > last_misfit[group])[:, None, None]
          previous = tf.where(worse, obj, previous)
        last_misfit[group] = misfit
      if self.corrections:
        features = tf.stack([tf.math.real(ahead), tf.math.imag(ahead),
                             tf.math.real(step), tf.math.imag(step)], -1)
        delta = self.corrections[k](features)
        obj += tf.complex(delta[..., 0], delta[..., 1])
      if physics.refine_probe and k >= self.groups:
        physics = physics._replace(probe=self.probe_step(
            obj, group_amplitudes[group], group, physics))
    return obj, previous, tf.convert_to_tensor(physics.probe, tf.complex64)

  def get_config(self):
    config = super().get_config()
    config.update(layout=self.layout.tolist(),
                  object_shape=list(self.object_shape),
                  probe_real=self.probe_real.tolist(),
                  probe_imag=self.probe_imag.tolist(), steps=self.steps,
                  filters=self.filters, inertia=self.inertia,
                  jit_compile=self.jit_compile, groups=self.groups,
                  smoothing=self.smoothing, line_search=self.line_search,
                  restart=self.restart,
                  prior=self.prior,
                  prior_every=self.prior_every,
                  prior_sigma=list(self.prior_sigma),
                  prior_train=self.prior_train,
                  data_steps=self.data_steps,
                  prior_domain=self.prior_domain,
                  prior_amplitude_scale=self.prior_amplitude_scale,
                  noise_model=self.noise_model,
                  prior_untied=self.prior_untied)
    return config
