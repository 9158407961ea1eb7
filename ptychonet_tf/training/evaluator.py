"""Held-out evaluation: loss, PSNR and SSIM of amplitude and phase, image panels.

Metrics follow `ptychonet_tf.evaluation.metrics.complex_metrics` (this project's
convention): the reconstruction's constant phase offset is removed and the
amplitude and phase are compared on the illuminated region
(`metrics.illuminated_region`, total |P|^2 >= 1% of its maximum, the region
`ptychonet_tf.evaluate` uses). They are averaged over the evaluated scans.
"""
import contextlib
import time

import numpy as np
import tensorflow as tf

from ptychonet_tf.data import pipeline
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import layers
from ptychonet_tf.model import losses
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import operator as operator_lib

METRIC_NAMES = ("amplitude_psnr", "amplitude_ssim", "phase_psnr", "phase_ssim")


def true_patches(batch, layout, probe_shape):
  """Ground-truth object patches of a batch: dict "amplitude", "phase" [B, N, h, w]."""
  return {"amplitude": forward.extract(batch["object_amplitude"], layout,
                                       probe_shape),
          "phase": forward.extract(batch["object_phase"], layout, probe_shape)}


def batch_probes(batch):
  """complex64 [..., h, w]: the probes of a family dataset's batch (its
  "probe" planes [..., h, w, 2])."""
  return tf.complex(batch["probe"][..., 0], batch["probe"][..., 1])


def pattern_weights(model, probe):
  """The MSE's per-pixel weights for patterns of `probe` (a family's
  probes [P, h, w]): the model's stitching weights of that probe."""
  if model.stitch_weights is None:
    return None
  return layers.stitch_weights(probe, "probe")


def pattern_batch_loss(model, batch, loss, probe, training):
  """Per-pattern loss float32 [P] of `model` on a batch of
  `pipeline.make_pattern_dataset` (patterns mixed across scans); `loss` a
  `losses.LossSpec`. A family dataset's patterns come with their own
  probes, which replace `probe`."""
  probes, weights = None, model.stitch_weights
  if "probe" in batch:
    probes = probe = batch_probes(batch)
    weights = pattern_weights(model, probes)
  patches = model.predict_pattern_patches(batch["amplitudes"],
                                          training=training, probes=probes)
  truth = ({"amplitude": batch["amplitude"], "phase": batch["phase"]}
           if losses.uses_objects(loss.name) else None)
  return losses.patch_loss(loss.name, patches, truth, probe,
                           batch["amplitudes"], loss.dse_lambda,
                           weights=weights, noise_model=loss.noise_model)


# The refinement epochs' object term, OBJECT_LOG_WEIGHT * ln(E + floor): the
# log of the final object's error E (-PSNR up to constants for the MSE), so
# that a reconstruction at 40 dB still has something to gain (a plain MSE
# term vanishes next to the patch loss there).
OBJECT_LOG_WEIGHT = 0.01
OBJECT_MSE_FLOOR = 1e-10


def final_object_error(batch, loss, final, region, misfit):
  """The errors E of the final objects, a list of float32 [B]: the object
  MSE (`losses.object_mse`, phase offset removed, on the region) for "mse"
  and "dse", their data misfit (no object needed) for "physics", the MSE
  plus dse_lambda times the misfit for "mse+physics". One E, or with
  loss.object_log "parts" and an object MSE two: its amplitude and its
  phase term (each plus the misfit term, if any); with "joint+parts" four:
  the MSE twice, then the two terms.

  `region` () -> [H, W] and `misfit` () -> [B] give the scan's scored
  region and the final objects' data misfit; each is called only when the
  loss needs it."""
  parts = [0.0]
  if losses.uses_objects(loss.name):
    args = (final["amplitude"], final["phase"], batch["object_amplitude"],
            batch["object_phase"], region())
    amplitude, phase = losses.object_mse_parts(*args)
    parts = {"joint": [amplitude + phase], "parts": [amplitude, phase],
             # Their mean: ln of the sum weighs 1/2, each part's ln 1/4.
             "joint+parts": [amplitude + phase] * 2 + [amplitude, phase],
             }[loss.object_log]
  if loss.name in ("physics", "mse+physics"):
    weight = loss.dse_lambda if loss.name == "mse+physics" else 1.0
    data = weight * misfit()
    parts = [part + data for part in parts]
  return parts


def object_term(batch, loss, final, region, misfit):
  """OBJECT_LOG_WEIGHT times the mean over `final_object_error`'s errors of
  ln(E + floor), float32 [B]: with "parts", amplitude and phase count in
  dB alike (in ln of their sum the larger, usually the phase, rules);
  "joint+parts" is the mean of the two objectives."""
  logs = [tf.math.log(error + OBJECT_MSE_FLOOR) for error in
          final_object_error(batch, loss, final, region, misfit)]
  return OBJECT_LOG_WEIGHT * tf.add_n(logs) / len(logs)


def family_scan_loss(model, batch, loss, training):
  """`scan_batch_loss` for a family dataset's batch of one scan, in the
  scan's own geometry (`PtychoNet.scan_stages`).

  Returns:
    (per_scan [1], dict "amplitude", "phase" [1, H, W] the final object,
    misfit: () -> [1] its data misfit, computed when called).
  """
  probe = batch_probes(batch)[0]
  patches, _, final, windows = model.scan_stages(
      batch["amplitudes"], batch["positions"], probe, training=training)
  truth = None
  if losses.uses_objects(loss.name):
    truth = {"amplitude": windows.extract(batch["object_amplitude"]),
             "phase": windows.extract(batch["object_phase"])}
  per_scan = losses.patch_loss(loss.name, patches, truth, probe,
                               batch["amplitudes"], loss.dse_lambda,
                               weights=pattern_weights(model, probe),
                               noise_model=loss.noise_model)

  def misfit():
    estimate = tf.complex(final["amplitude"] * tf.cos(final["phase"]),
                          final["amplitude"] * tf.sin(final["phase"]))
    return losses.data_misfit(
        forward.far_field(probe * windows.extract(estimate)),
        batch["amplitudes"], loss.noise_model)

  def region():
    return operator_lib.Ptychography.of_scan(
        windows.corners, windows.object_shape,
        windows.probe_shape).lit_region(probe)

  if model.refine_steps:
    per_scan += object_term(batch, loss, final, region, misfit)
  return per_scan, final, misfit


def scan_batch_loss(model, batch, loss, probe, training, mask):
  """Per-scan loss float32 [B] of a whole-scan batch, and the final objects.

  The patch loss `loss` (a `losses.LossSpec`) of the network's patches,
  plus, when the model refines (`refine_steps` > 0), OBJECT_LOG_WEIGHT times
  the log of its final object's error (`object_term`): the end-to-end
  objective of the refinement epochs. "physics" reads no true object.

  Returns:
    (per_scan [B], dict "amplitude", "phase" [B, H, W] the final objects).
    A family dataset's scan (`family_scan_loss`) brings its own probe and
    region; `probe` and `mask` are then not used.
  """
  if "positions" in batch:
    return family_scan_loss(model, batch, loss, training)[:2]
  patches, _, final = model.reconstruct(batch["amplitudes"], training=training)
  truth = (true_patches(batch, model.layout, model.probe_shape)
           if losses.uses_objects(loss.name) else None)
  per_scan = losses.patch_loss(loss.name, patches, truth, probe,
                               batch["amplitudes"], loss.dse_lambda,
                               weights=model.stitch_weights,
                               noise_model=loss.noise_model)
  if model.refine_steps:
    per_scan += object_term(
        batch, loss, final, lambda: mask, lambda: losses.object_misfit(
            final["amplitude"], final["phase"], probe, model.layout,
            batch["amplitudes"], loss.noise_model))
  return per_scan, final


class Evaluator:
  """Evaluates a PtychoNet on the first `max_scans` scans of a dataset.

  Args:
    model: PtychoNet.
    dataset: unshuffled tf.data.Dataset of test batches (pipeline.make_dataset).
    geometry: physics.geometry.Geometry of the dataset.
    loss: the training loss (`losses.LossSpec`), reported as the validation
      loss.
    max_scans: 0 = every scan of `dataset`.
    num_images: scans whose reconstructions are kept for image panels.
    data_dir, split: where `dataset` reads from; when given, a damaged record
      ends in a UserError naming its shard (pipeline.naming_damaged_records)
      instead of tf.data's DataLossError.
    objects: False for measured scans (records without objects): the loss
      and the data misfit only, no PSNR/SSIM (NaN) and no image panels.
    family: True for a family dataset (batches of one scan, each in its
      own geometry): scored on each scan's region, no image panels (the
      scans differ in size).
  """

  def __init__(self, model, dataset, geometry, loss=losses.LossSpec(),
               max_scans=0, num_images=3, data_dir=None, split="test",
               objects=True, family=False):
    self.model = model
    self.objects = objects
    self.family = family
    if family:
      num_images = 0
    self.dataset = dataset
    self.data_dir = data_dir
    self.split = split
    self.geometry = geometry
    self.loss = loss
    self.max_scans = max_scans
    self.num_images = num_images
    self.mask = metrics.illuminated_region(geometry.layout,
                                           geometry.object_shape, geometry.probe)
    probe = tf.constant(geometry.probe, tf.complex64)

    mask = tf.constant(self.mask, tf.float32)

    if family:
      # One trace for scans of every size.
      @tf.function(input_signature=[dataset.element_spec])
      def family_step(batch):
        per_scan, obj, misfit = family_scan_loss(model, batch, loss, False)
        return per_scan, misfit(), obj["amplitude"], obj["phase"]

      self._step = family_step
      return

    @tf.function
    def step(batch):
      per_scan, obj = scan_batch_loss(model, batch, loss, probe, False, mask)
      misfit = losses.object_misfit(obj["amplitude"], obj["phase"], probe,
                                    model.layout, batch["amplitudes"])
      return per_scan, misfit, obj["amplitude"], obj["phase"]

    self._step = step

  def __call__(self):
    """Returns (scalars dict, images dict of numpy arrays).

    scalars: loss, misfit (the final objects' data misfit, mean (|F(P *
      O_hat[t:b, l:r])| - A)^2, `losses.object_misfit`), amplitude_psnr,
      amplitude_ssim, phase_psnr, phase_ssim (means over scans), scans,
      seconds, scans_per_second (inference).
    images: "truth", "estimate": complex64 [k, H, W] for k <= num_images scans.
    """
    losses_, misfits, results = [], [], []
    truth_images, estimate_images = [], []
    seen, infer_seconds = 0, 0.0
    damaged = (pipeline.naming_damaged_records(self.data_dir, self.split)
               if self.data_dir else contextlib.nullcontext())
    with damaged:
      for batch in self.dataset:
        if self.max_scans and seen >= self.max_scans:
          break
        start = time.perf_counter()
        per_scan, misfit, amplitude, phase = self._step(batch)
        amplitude, phase = amplitude.numpy(), phase.numpy()
        infer_seconds += time.perf_counter() - start
        for i in range(amplitude.shape[0]):
          if self.max_scans and seen >= self.max_scans:
            break
          losses_.append(float(per_scan[i]))
          misfits.append(float(misfit[i]))
          seen += 1
          if not self.objects:
            continue
          estimate = amplitude[i] * np.exp(1j * phase[i])
          truth = (batch["object_amplitude"][i].numpy() *
                   np.exp(1j * batch["object_phase"][i].numpy()))
          mask = self.mask
          if self.family:  # the scan's own region
            probe = batch_probes(batch)[i].numpy()
            layout, shape = layouts.layout_from_positions(
                batch["positions"][i].numpy(), probe.shape)
            mask = layouts.illuminated_region(layout, shape, probe)
          results.append(metrics.complex_metrics(estimate, truth, mask))
          if len(truth_images) < self.num_images:
            truth_images.append(truth)
            estimate_images.append(estimate)
    scalars = {"loss": float(np.mean(losses_)) if losses_ else float("nan"),
               "misfit": float(np.mean(misfits)) if misfits else float("nan"),
               "scans": seen, "seconds": infer_seconds,
               "scans_per_second": seen / infer_seconds if infer_seconds else 0.0}
    for name in METRIC_NAMES:
      scalars[name] = float(np.mean([r[name] for r in results])) if results \
          else float("nan")
    images = {"truth": np.asarray(truth_images, np.complex64),
              "estimate": np.asarray(estimate_images, np.complex64)}
    return scalars, images


def image_panels(truth, estimate, amplitude_range, phase_range, mask=None):
  """TensorBoard panels: ground truth | reconstruction | |error| side by side.

  Args:
    truth, estimate: complex [k, H, W].
    amplitude_range, phase_range: (lo, hi) display ranges.
    mask: optional bool [H, W]; the phase offset is fitted on it.

  Returns:
    dict "amplitude", "phase": float32 [k, H, 3W + 4, 1] in [0, 1]; the error
    third shows |estimate - truth| / (hi - lo).
  """
  out = {"amplitude": [], "phase": []}
  for t, e in zip(truth, estimate):
    e = metrics.remove_phase_offset(e, t, mask)
    for name, (lo, hi), true_img, est_img in (
        ("amplitude", amplitude_range, np.abs(t), np.abs(e)),
        ("phase", phase_range, np.angle(t), metrics.aligned_phase(e, t))):
      span = max(hi - lo, 1e-12)
      gap = np.ones((true_img.shape[0], 2))
      row = np.concatenate([
          (true_img - lo) / span, gap, (est_img - lo) / span, gap,
          np.abs(est_img - true_img) / span], axis=1)
      out[name].append(np.clip(row, 0.0, 1.0)[..., None])
  return {k: np.asarray(v, np.float32) for k, v in out.items()}
