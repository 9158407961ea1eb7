r"""Reconstructs the measured Siemens-star scan with DM and draws docs/images/siemens_star.png.

  python tools/siemens_star.py [--data=../shared/data/ptycho-tike-siemens-star/siemens-star-small.npz.bz2 \
      --iterations=300 --probe_start=10 --out=docs/images/siemens_star.png]

The scan (tike's test data, APS Velociprobe) is 516 far-field patterns of
128x128 photon counts with jittered positions and an initial probe guess; it
has no ground truth. DM starts from a flat object and refines the probe from
iteration --probe_start on, with the settings for measured data: Fourier
power bound (--fourier_relax), probe support (--probe_support) and object
inertia (--object_inertia), see docs/baselines.md. The figure shows the object
amplitude and phase (the scanned region, phase offset set so that the median
is 0), the refined probe and the chi / Fourier-error history.

With --learned it also runs a generic learned model, trained only on
simulated scans of other probes and layouts, on the measured star through
its SavedModel's `any_scan` signatures (positions and probe as inputs; no
training in the star's geometry):

1. the probe: --learned_probe_iterations DM iterations with probe
   refinement on the full-resolution scan (the calibration);
2. the coarse scan: the model takes h x w patterns (64x64), the star has
   2h x 2w, so the central h x w of each pattern is kept (zero frequency at
   (h//2, w//2), `physics.resample`): the same scan with twice the object
   pixel size, so the positions are divided by 2 and the probe is resampled
   (its spectrum cropped to h x w; the unitary DFT keeps the intensity
   convention I = |DFT(P O)|^2 / (h w));
3. on the coarse scan: DM-N and LSQML-N (--iterations, from the file's
   probe guess with probe refinement), the learned model alone with the
   calibrated probe (`any_scan`), with probe refinement
   (`any_scan_refine_probe`), and from the file's probe guess with probe
   refinement (no calibration at all): Fourier error against seconds;
4. a spatial hold-out: the patterns of the upper half (positions with y
   below the median) as a measured dataset (tools/make_tfrecords.py
   --scans), a self-supervised fine-tune of the model on them
   (ptychonet_tf.train --init_from=<the model> --loss=physics, the network
   flags of the model's run), and the fine-tuned model's reconstruction of
   the lower half's patterns, compared on the lower half's lit region with
   the coarse DM-N of the whole scan: phase SSIM and FRC after removing
   the ambiguities of blind ptychography from the estimate (a shift, a
   linear phase ramp a + b y + c x and an amplitude scale,
   `metrics.register_blind`); as context, the same scores against a DM-N
   started from the calibrated probe, and DM-N from the calibrated probe,
   LSQML-N and the model on the whole scan scored the same way (the
   sanity rows: two solvers should agree).

Steps 1, 3 and 4's reconstructions run in this process; 4's dataset and
fine-tune are printed commands that are kept when run again. The table goes
to reports/siemens_star_learned.md (and .json), the figure to
--learned_out, the scored reconstructions to siemens_star_learned.npz
beside the report, from which --learned_rescore scores the hold-out again
without reconstructing.

  python tools/siemens_star.py --learned [--learned_model=saved_models/small_any]
  python tools/siemens_star.py --learned --learned_rescore
"""
import dataclasses
import io
import os
import sys
import time

from absl import flags
import numpy as np
from PIL import Image
from scipy import ndimage

from ptychonet_tf import cli
from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import dm
from ptychonet_tf.cli.stages import Stages, fmt
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.data import readers
from ptychonet_tf.data import scanfile
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import resample
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError, report_user_errors

# The repository root of an editable install (make install): ptychonet_tf/cli/..
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data",
                            "ptycho-tike-siemens-star",
                            "siemens-star-small.npz.bz2")

flags.DEFINE_string("data", DEFAULT_DATA, "The tike Siemens-star file.")
flags.DEFINE_integer("iterations", 300, "DM iterations.")
flags.DEFINE_integer("probe_start", 10, "First iteration that refines the probe.")
flags.DEFINE_float("probe_support", 0.9, "Probe support (fraction of the window).")
flags.DEFINE_float("fourier_relax", 0.05, "Fourier power-bound factor.")
flags.DEFINE_float("object_inertia", 0.01, "Object inertia of the overlap projection.")
flags.DEFINE_string("out", os.path.join(REPO, "docs", "images",
                                        "siemens_star.png"), "Output PNG.")
flags.DEFINE_string("save", None, "Also write the reconstruction to this .npz.")
flags.DEFINE_bool("learned", False,
                  "Also run a generic learned model (no training in the "
                  "star's geometry) on the star's cropped patterns next to "
                  "DM and LSQML, and the upper/lower-half hold-out (see the "
                  "module doc).")
flags.DEFINE_string("learned_model", None,
                    "--learned: the generic model's SavedModel (export dir); "
                    "default saved_models/small_any if it exists, else "
                    "saved_models/small_dense.")
flags.DEFINE_string("learned_run", None,
                    "--learned: the model's training run, whose flags.txt "
                    "gives the fine-tune its network flags; default "
                    "runs/<the model's folder name>.")
flags.DEFINE_integer("learned_probe_iterations", 100,
                     "--learned: DM iterations with probe refinement on the "
                     "full-resolution scan that find the model's probe.")
flags.DEFINE_integer("learned_fine_tune_epochs", 1,
                     "--learned: pattern epochs of the hold-out's "
                     "self-supervised fine-tune on the upper half (then its "
                     "end-to-end refinement epoch); 0 = no hold-out.")
flags.DEFINE_integer("learned_fine_tune_steps", None,
                     "--learned: end-to-end steps of the fine-tune "
                     "(--refine_steps_per_epoch); default the model run's.")
flags.DEFINE_string("learned_out", os.path.join(
    REPO, "docs", "images", "siemens_star_learned.png"),
                    "--learned: the comparison figure.")
flags.DEFINE_string("learned_reports_dir", "reports",
                    "--learned: where siemens_star_learned.md/.json/.npz go.")
flags.DEFINE_bool("learned_rescore", False,
                  "--learned: reconstruct nothing; score the hold-out again "
                  "from the reconstructions saved in "
                  "<--learned_reports_dir>/siemens_star_learned.npz by an "
                  "earlier --learned run, and rewrite the report's hold-out "
                  "section.")
FLAGS = flags.FLAGS

MODELS = ("saved_models/small_any", "saved_models/small_dense")
# The lit region of the comparisons: sum_j |P|^2 >= this of its maximum
# (the scanned rim, reached by the probe's faint tails only, is noise).
LIT_FRACTION = 0.05


def dm_config(iterations):
  """DM with probe refinement and the settings for measured data (flags)."""
  return dm.DMConfig(iterations=iterations, refine_probe=True,
                     probe_start=FLAGS.probe_start, init="ones",
                     probe_support=FLAGS.probe_support,
                     fourier_relax=FLAGS.fourier_relax,
                     object_inertia=FLAGS.object_inertia, progress=True)


def lit_crop(scan, probe, obj):
  """The object cropped to where `probe` lit it (5% of the peak summed
  intensity; the scanned rim, reached by the faint tails only, is noise),
  its phase offset set so that the median is 0; and that region's mask."""
  mask = metrics.illuminated_region(scan.layout, scan.object_shape, probe,
                                    0.05)
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
  obj, inner = obj[crop], mask[crop]
  obj = obj * np.exp(-1j * np.angle(np.median(obj[inner].real) +
                                    1j * np.median(obj[inner].imag)))
  return obj, inner


def save_png(path, fig, plt):
  """Writes `fig` as a 256-colour PNG (small for the repository); closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=80)
  plt.close(fig)
  image = Image.open(buffer).convert("RGB").quantize(256)
  files.atomic_write(path, lambda tmp: image.save(tmp, format="PNG",
                                                  optimize=True))


def draw(path, scan, result):
  """Amplitude, phase, probe amplitude and the error history in one figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  obj, inner = lit_crop(scan, result.probe, result.object)
  amplitude = np.abs(obj)
  phase = np.angle(obj)
  lo, hi = np.percentile(amplitude[inner], [1, 99])
  plo, phi = np.percentile(phase[inner], [1, 99])
  fig, axes = plt.subplots(1, 4, figsize=(17, 4.4),
                           gridspec_kw=dict(width_ratios=[1, 1, 0.8, 1]))
  im = axes[0].imshow(amplitude, cmap="gray", vmin=lo, vmax=hi)
  axes[0].set_title("object amplitude")
  fig.colorbar(im, ax=axes[0], fraction=0.046)
  im = axes[1].imshow(phase, cmap="viridis", vmin=plo, vmax=phi)
  axes[1].set_title("object phase (rad)")
  fig.colorbar(im, ax=axes[1], fraction=0.046)
  axes[2].imshow(np.abs(result.probe), cmap="magma")
  axes[2].set_title("refined probe amplitude")
  for ax in axes[:3]:
    ax.set_xticks([])
    ax.set_yticks([])
  # Iteration 1's chi compares the first overlap projection with the flat
  # start it reproduces (~0); the curves start at iteration 2.
  steps = np.arange(2, len(result.chi) + 1)
  axes[3].semilogy(steps, result.chi[1:], label="chi")
  axes[3].semilogy(steps, result.fourier_error[1:], label="Fourier error")
  axes[3].set_xlabel("DM iteration")
  axes[3].legend()
  axes[3].set_title("convergence")
  count, h, w = scan.amplitudes.shape
  fig.suptitle(f"Measured Siemens star (tike test data, APS Velociprobe): "
               f"{count} patterns of {h}x{w}, DM {len(result.chi)} iterations "
               f"with probe refinement")
  fig.tight_layout()
  save_png(path, fig, plt)


def draw_learned(path, curves, points, panels, suptitle):
  """Fourier error against seconds (curves: name -> {"seconds",
  "fourier_error"}; points: (name, seconds, error) of single-call methods),
  and the phase of each of the panels, (title, scan, object, probe)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(
      1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 4.4),
      gridspec_kw=dict(width_ratios=[1.3] + [1] * len(panels)))
  for name, curve in curves.items():
    axes[0].semilogy(curve["seconds"], curve["fourier_error"], label=name)
  for (name, seconds, error), marker in zip(points, "os^Dv<>"):
    axes[0].semilogy([seconds], [error], marker, markersize=8, label=name)
  axes[0].set_xscale("log")
  axes[0].set_xlabel("seconds (steady state)")
  axes[0].set_ylabel("Fourier error (cropped patterns)")
  axes[0].grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  axes[0].set_title("data misfit against time")
  for ax, (title, scan, obj, probe) in zip(axes[1:], panels):
    cropped, inner = lit_crop(scan, probe, obj)
    phase = np.angle(cropped)
    lo, hi = np.percentile(phase[inner], [1, 99])
    ax.imshow(phase, cmap="viridis", vmin=lo, vmax=hi)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(suptitle, fontsize=10)
  fig.tight_layout()
  save_png(path, fig, plt)


def default_model():
  """--learned_model, or the first of MODELS that exists; UserError naming
  the commands that make one when none does."""
  if FLAGS.learned_model:
    if not os.path.exists(FLAGS.learned_model):
      raise UserError(f"--learned_model={FLAGS.learned_model} does not exist "
                      f"(a SavedModel export dir with an any_scan signature)")
    return FLAGS.learned_model
  for path in MODELS:
    if os.path.exists(path):
      return path
  raise UserError("--learned needs a generic model and neither "
                  f"{' nor '.join(MODELS)} exists: make one with `make train "
                  "CONFIG=small_any` (or CONFIG=small_dense), or pass "
                  "--learned_model=DIR")


class AnyScanModel:
  """A SavedModel's `any_scan` and `any_scan_refine_probe` signatures.

  Args:
    path: an export dir or one of its version dirs.

  Attributes:
    path: the version dir.
    pattern_shape: (h, w) the model takes.
  """

  def __init__(self, path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from ptychonet_tf.model import inference  # pylint: disable=g-import-not-at-top
    self.path = inference.resolve_saved_model(path)
    try:
      loaded = tf.saved_model.load(self.path)
    except inference.LOAD_ERRORS + (tf.errors.OpError,) as e:
      raise UserError(f"SavedModel {self.path} cannot be loaded "
                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    missing = [name for name in ("any_scan", "any_scan_refine_probe")
               if name not in loaded.signatures]
    if missing:
      raise UserError(f"SavedModel {self.path} has no {' or '.join(missing)} "
                      f"signature (an older export): export it again with "
                      f"python -m ptychonet_tf.export --model_dir=<its run> "
                      f"--export_dir=<its export dir>")
    self._loaded = loaded  # keeps the variables alive
    spec = loaded.signatures["any_scan"].structured_input_signature[1]
    dims = spec["amplitudes"].shape
    self.pattern_shape = (int(dims[-2]), int(dims[-1]))

  def __call__(self, scan, refine_probe=False):
    """Reconstructs `scan` (a scanfile.Scan of the model's pattern size) in
    one call after a warm-up call (tracing is not reconstruction).

    Returns:
      (object complex64 [H, W] in the scan's object frame, flat (1) where
       no window reaches; probe complex64 [h, w], the refined one with
       refine_probe; seconds of the warm call).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from ptychonet_tf.model import inference  # pylint: disable=g-import-not-at-top
    name = "any_scan_refine_probe" if refine_probe else "any_scan"
    function = self._loaded.signatures[name]
    corners = scan.layout[:, [0, 2]].astype(np.float32)
    probe = np.asarray(scan.probe, np.complex64)
    inputs = dict(
        amplitudes=tf.constant(scan.amplitudes[None], tf.float32),
        positions=tf.constant(corners[None]),
        probe=tf.constant(np.stack([probe.real, probe.imag], -1)))
    if refine_probe:
      inputs.update(inference.refine_probe_inputs(function, self.path))
    function(**inputs)  # warm-up
    tick = time.perf_counter()
    out = {key: value.numpy() for key, value in function(**inputs).items()}
    seconds = time.perf_counter() - tick
    if refine_probe:
      probe = (out["probe"][..., 0] + 1j * out["probe"][..., 1]).astype(
          np.complex64)
    part = out["amplitude"][0] * np.exp(1j * out["phase"][0])
    obj = np.ones(scan.object_shape, np.complex64)
    top, left = (int(v) for v in corners.min(axis=0))
    obj[top:top + part.shape[0], left:left + part.shape[1]] = part
    if not np.all(np.isfinite(obj)):
      raise UserError(f"SavedModel {self.path} returned NaN or infinite values")
    return obj, probe, seconds


def coarse_scan(scan, shape, probe):
  """The scan with its patterns cropped to `shape` (module doc, step 2).

  Args:
    scan: scanfile.Scan of f*h x f*w patterns.
    shape: (h, w).
    probe: complex [f*h, f*w], resampled into the result's probe.

  Returns:
    (scanfile.Scan of h x w patterns, positions divided by f, its layout
     rounded to the coarse pixels with a margin of 2; f).
  """
  try:
    factor = resample.crop_factor(scan.amplitudes.shape[1:], shape)
  except ValueError as e:
    raise UserError(f"the scan's patterns and the model's: {e}") from None
  positions = resample.coarse_positions(scan.layout[:, [0, 2]], factor)
  layout, object_shape = layouts.layout_from_positions(positions, shape,
                                                       margin=2)
  return scanfile.Scan(
      amplitudes=resample.crop_patterns(scan.amplitudes, shape),
      layout=layout, probe=resample.resample_probe(probe, shape),
      object_shape=object_shape).validate(name="the cropped scan"), factor


def network_flags(run):
  """The network flags (and the refinement epoch's) of a training run's
  flags.txt, which a fine-tune from its weights must repeat."""
  from ptychonet_tf import settings  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.model import network  # pylint: disable=g-import-not-at-top
  path = os.path.join(run, "flags.txt")
  if not os.path.isfile(path):
    raise UserError(f"{path} does not exist: the hold-out's fine-tune needs "
                    f"the network flags of the model's training run; pass "
                    f"--learned_run=DIR, or --learned_fine_tune_epochs=0")
  names = {item.flag if isinstance(item.flag, str) else item.name
           for item in settings.settings_of(network.NetworkConfig)
           if item.flag}
  names |= {"refine_epochs", "refine_steps_per_epoch", "refine_learning_rate",
            "refine_batch_size", "learning_rate", "beta1", "physics_noise"}
  kept = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      name = line[2:].partition("=")[0]
      if "=" not in line and name.startswith("no"):
        name = name[2:]
      if line.startswith("--") and name in names:
        kept.append(line)
  return kept


def holdout_score(estimate, reference, region):
  """Phase SSIM and FRC of `estimate` against `reference` on `region`, after
  `metrics.register_blind` (shift, linear phase ramp, amplitude scale: the
  ambiguities of blind ptychography); the FRC of the two phase images minus
  their region means, tapered to 0 at the region's edge (the region blurred
  by a 2-pixel Gaussian, times the region)."""
  aligned, info = metrics.register_blind(estimate, reference, region, order=1)
  phase = metrics.aligned_phase(aligned, reference)
  reference_phase = np.angle(reference)
  ssim = metrics.ssim(phase, reference_phase, region)
  rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
  box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
  inside = region[box]
  taper = ndimage.gaussian_filter(inside.astype(np.float64), 2.0) * inside

  def centred(image):
    image = image[box]
    return (image - image[inside].mean()) * taper

  frequencies, frc = metrics.fourier_ring_correlation(
      centred(phase), centred(reference_phase))
  return {"phase_ssim": ssim, "shift": info["shift"],
          "ramp": [float(v) for v in info["surface"][1:3]],
          "scale": info["scale"],
          "frc_half": metrics.frc_crossing(frequencies, frc, 0.5),
          "frc_mean": float(np.mean(frc)),
          "frc": frc.tolist(), "frequencies": frequencies.tolist()}


def holdout_rows(estimates, references, region):
  """The hold-out table's rows: each estimate scored against the main
  reference (`holdout_score`), its phase SSIM against the context
  reference after the same alignment, and against the main one after the
  shift and constant phase only (`metrics.register`, no ramp or scale).

  Each reference's constant phase is set first so that its median on the
  region is 0 (no phase wrap inside the region).

  Args:
    estimates: list of (title, complex [H, W], seconds or None).
    references: (main, context) complex [H, W].
    region: bool [H, W].
  """
  # Each reference's phase offset set so that its median on the region is
  # 0: its phase image then wraps (at +-pi) nowhere in the region, and
  # SSIM compares the phase, not where the wraps fall.
  main, context = (
      ref * np.exp(-1j * np.angle(np.median(ref[region].real) +
                                  1j * np.median(ref[region].imag)))
      for ref in references)
  rows = []
  for title, obj, seconds in estimates:
    row = dict(holdout_score(obj, main, region), method=title,
               seconds=seconds)
    row["phase_ssim_context"] = (
        None if np.array_equal(obj, references[1]) else
        holdout_score(obj, context, region)["phase_ssim"])
    constant, _ = metrics.register(obj, main, region)
    row["phase_ssim_constant"] = metrics.ssim(
        metrics.aligned_phase(constant, main), np.angle(main), region)
    rows.append(row)
    print(f"hold-out {title}: phase SSIM {row['phase_ssim']:.3f} (shift + "
          f"constant only {row['phase_ssim_constant']:.3f}), FRC 0.5 at "
          f"{row['frc_half'] / 0.5:.2f} of Nyquist, shift "
          f"({row['shift'][0]:+.2f}, {row['shift'][1]:+.2f}) px, ramp "
          f"({row['ramp'][0]:+.4f}, {row['ramp'][1]:+.4f}) rad/px, scale "
          f"{row['scale']:.3g}", flush=True)
  return rows


def holdout_lines(rows, n, epochs, stage_times):
  """The report's hold-out section (markdown lines)."""
  lines = [
      "\n## Spatial hold-out\n",
      f"Fine-tuned (`--loss=physics`, {epochs} pattern epoch(s) and the "
      f"end-to-end epoch) on the upper half's patterns only (positions with "
      f"y below the median), the model reconstructs the lower half's "
      f"patterns; compared with DM-{n} of the whole 64x64 scan (from the "
      f"file's probe guess, as the solvers above) on the lower half's lit "
      f"region (sum_j |P|^2 >= {LIT_FRACTION:g} of its maximum, lower "
      f"positions only). Before scoring, the ambiguities of blind "
      f"ptychography are removed from the estimate "
      f"(`metrics.register_blind`): a sub-pixel shift, a linear phase ramp "
      f"a + b y + c x (fitted on the wrapped phase difference, amplitude "
      f"weighted) and one amplitude scale. Context columns: the phase SSIM "
      f"against DM-{n} started from the calibrated probe (the model's), "
      f"and against the main reference after the shift and the constant "
      f"phase only (`metrics.register`, the alignment before). FRC of the "
      f"two phase images (region means removed, edge tapered); the 0.5 "
      f"crossing as a fraction of Nyquist. Stages: " + ", ".join(
          f"{title} {fmt(sec)}" for title, sec in stage_times) + ".\n",
      f"| reconstruction | phase SSIM | against DM-{n}, calibrated probe | "
      f"shift + constant only | FRC 0.5 crossing (of Nyquist) | mean FRC | "
      f"shift (px) | ramp b, c (rad/px) | scale | seconds |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    sec = "" if row["seconds"] is None else f"{row['seconds']:.2f}"
    context = ("(the reference)" if row["phase_ssim_context"] is None
               else f"{row['phase_ssim_context']:.3f}")
    lines.append(
        f"| {row['method']} | {row['phase_ssim']:.3f} | {context} | "
        f"{row['phase_ssim_constant']:.3f} | {row['frc_half'] / 0.5:.2f} | "
        f"{row['frc_mean']:.3f} | ({row['shift'][0]:+.2f}, "
        f"{row['shift'][1]:+.2f}) | ({row['ramp'][0]:+.4f}, "
        f"{row['ramp'][1]:+.4f}) | {row['scale']:.3g} | {sec} |")
  target = [row for row in rows if row["method"] == TARGET_ROW][0]
  tuned_ssim = target["phase_ssim"]
  lines.append(f"\nTarget (issue 26): the hold-out's phase SSIM against "
               f"DM-{n} on the lower half >= 0.95: {tuned_ssim:.3f}, "
               f"{'met' if tuned_ssim >= 0.95 else 'not met'}.")
  return lines


TARGET_ROW = "fine-tuned on the upper half, lower half only"


def holdout(model, coarse, stages):
  """Step 4: fine-tune on the upper half, reconstruct the lower half.

  Returns:
    (list of (title, object, seconds) of the lower half's reconstructions,
     the lower half's scan, its lit region, the fine-tuned model's object).
  """
  py = sys.executable
  h, w = coarse.amplitudes.shape[1:]
  tops = coarse.layout[:, 0]
  upper = tops < np.median(tops)
  lower = ~upper
  tag = f"{h}x{w}_p{FLAGS.learned_probe_iterations}"
  scan_path = f"tfrecords/siemens_star_upper_{tag}.npz"
  data_dir = f"tfrecords/siemens_star_upper_{tag}"
  model_name = os.path.basename(os.path.dirname(model.path))
  run = f"runs/siemens_star_upper_{model_name}"
  export = f"saved_models/siemens_star_upper_{model_name}"
  if not os.path.isfile(scan_path):  # kept: the dataset records its checksum
    layout, object_shape = layouts.layout_from_positions(
        coarse.layout[upper][:, [0, 2]], (h, w), margin=2)
    os.makedirs("tfrecords", exist_ok=True)
    scanfile.Scan(amplitudes=coarse.amplitudes[upper], layout=layout,
                  probe=coarse.probe, object_shape=object_shape).save(
                      scan_path)
  print(f"\nhold-out: {int(upper.sum())} patterns of the upper half (positions "
        f"with y below the median) in {scan_path}; the lower half's "
        f"{int(lower.sum())} are reconstructed", flush=True)
  stages.run("the upper half as a measured dataset", [
      py, "tools/make_tfrecords.py", f"--scans={scan_path}",
      f"--out_dir={data_dir}", "--probe_iterations=0", "--noprogress"])
  steps = ([f"--refine_steps_per_epoch={FLAGS.learned_fine_tune_steps}"]
           if FLAGS.learned_fine_tune_steps else [])
  run_dir = FLAGS.learned_run or os.path.join("runs", model_name)
  stages.run("fine-tune on the upper half (self-supervised)", [
      py, "-m", "ptychonet_tf.train", f"--data_dir={data_dir}",
      f"--init_from={model.path}", "--loss=physics", f"--model_dir={run}",
      f"--export_dir={export}", f"--epochs={FLAGS.learned_fine_tune_epochs}"]
      + network_flags(run_dir) + ["--batch_size=1"] + steps)
  lower_scan = scanfile.Scan(amplitudes=coarse.amplitudes[lower],
                             layout=coarse.layout[lower], probe=coarse.probe,
                             object_shape=coarse.object_shape)
  region = metrics.illuminated_region(lower_scan.layout, coarse.object_shape,
                                      coarse.probe, LIT_FRACTION)
  tuned = AnyScanModel(export)
  estimates, tuned_object = [], None
  for title, which, refine in (
      ("generic model, lower half only", model, False),
      (TARGET_ROW, tuned, False),
      (TARGET_ROW + ", + probe refinement", tuned, True)):
    obj, _, seconds = which(lower_scan, refine)
    if which is tuned and not refine:
      tuned_object = obj
    estimates.append((title, obj, seconds))
  return estimates, lower_scan, region, tuned_object


def save_holdout(path, estimates, references, region, meta):
  """The hold-out's reconstructions and references as one .npz."""
  files.save_npz(
      path, estimates=np.stack([obj for _, obj, _ in estimates]),
      titles=np.array([title for title, _, _ in estimates]),
      seconds=np.array([np.nan if sec is None else sec
                        for _, _, sec in estimates]),
      reference=references[0], reference_context=references[1],
      region=region, iterations=meta["iterations"],
      fine_tune_epochs=meta["fine_tune_epochs"])


def rescore():
  """--learned_rescore: the hold-out scored again from the saved .npz; the
  report's hold-out section and the .json's "holdout" rewritten."""
  base = os.path.join(FLAGS.learned_reports_dir, "siemens_star_learned")
  paths = [base + ext for ext in (".npz", ".json", ".md")]
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f"--learned_rescore needs {path}: run "
                      f"tools/siemens_star.py --learned first (it saves the "
                      f"reconstructions it scores)")
  saved = np.load(paths[0])
  if "region" not in saved:
    raise UserError(f"{paths[0]} holds no hold-out (a run with "
                    f"--learned_fine_tune_epochs=0)")
  seconds = [None if np.isnan(sec) else float(sec) for sec in saved["seconds"]]
  estimates = list(zip([str(t) for t in saved["titles"]], saved["estimates"],
                       seconds))
  rows = holdout_rows(estimates, (saved["reference"],
                                  saved["reference_context"]),
                      saved["region"])
  with open(paths[1]) as f:
    import json  # pylint: disable=g-import-not-at-top
    report = json.load(f)
  lines = holdout_lines(rows, int(saved["iterations"]),
                        int(saved["fine_tune_epochs"]), report["stages"])
  report["holdout"] = rows
  files.write_json(paths[1], report, indent=1)
  with open(paths[2]) as f:
    text = f.read()
  head = text.split("\n## Spatial hold-out")[0].rstrip("\n")
  files.write_text(paths[2], head + "\n" + "\n".join(lines) + "\n")
  print("\n".join(lines))
  print(f"wrote {paths[2]} and {paths[1]}")


def learned(scan, dm_full, model):
  """--learned: the module doc's steps 1-4, the table and the figure."""
  from ptychonet_tf.utils import machine  # pylint: disable=g-import-not-at-top
  h, w = model.pattern_shape
  print(f"\n=== the generic model {model.path} ({h}x{w} patterns) on the "
        f"measured star, no training in its geometry", flush=True)
  tick = time.perf_counter()
  calibration = reconstructors.reconstruct(
      "dm", scan.amplitudes, scan.probe, scan.layout, scan.object_shape,
      dm_config(FLAGS.learned_probe_iterations))
  calibration_seconds = time.perf_counter() - tick
  coarse, factor = coarse_scan(scan, (h, w), calibration.probe)
  guess = resample.resample_probe(scan.probe, (h, w))
  big_h, big_w = scan.amplitudes.shape[1:]
  crop_line = (f"the model takes {h}x{w} patterns: the central {h}x{w} of "
               f"the star's {big_h}x{big_w} are kept (zero frequency at "
               f"({h // 2}, {w // 2})), the object pixel is {factor} times "
               f"larger: positions divided by {factor} (object "
               f"{coarse.object_shape[0]}x{coarse.object_shape[1]}), the "
               f"probe resampled (its spectrum cropped to {h}x{w})")
  print(f"probe: {FLAGS.learned_probe_iterations} DM iterations with probe "
        f"refinement at {big_h}x{big_w}, {calibration_seconds:.1f} s\n"
        f"{crop_line}", flush=True)
  n = FLAGS.iterations
  solvers = {}
  for name, method, config in (
      (f"DM-{n}", "dm", dm_config(n)),
      (f"LSQML-{n}", "lsqml", reconstructors.configure(
          "lsqml", iterations=n, refine_probe=True,
          probe_start=FLAGS.probe_start, progress=True))):
    result = reconstructors.reconstruct(
        method, coarse.amplitudes, guess, coarse.layout, coarse.object_shape,
        config)
    solvers[name] = result
    print(f"{name} at {h}x{w}: {result.seconds:.1f} s "
          f"({result.seconds_per_iteration:.4f} s per iteration)", flush=True)
  rows = []
  for name, result in solvers.items():
    rows.append({"method": f"{name}, probe refined from the file's guess",
                 "seconds": n * result.seconds_per_iteration,
                 "seconds_with_compile": result.seconds,
                 "fourier_error": metrics.fourier_error(
                     result.object, result.probe, coarse.layout,
                     coarse.amplitudes)})
  learned_runs = {}
  for title, probe, refine in (
      ("learned, calibrated probe (any_scan)", coarse.probe, False),
      ("learned, calibrated probe + probe refinement (any_scan_refine_probe)",
       coarse.probe, True),
      ("learned, file's probe guess + probe refinement (no DM at all)",
       guess, True)):
    tick = time.perf_counter()
    obj, refined, seconds = model(dataclasses.replace(coarse, probe=probe),
                                  refine)
    learned_runs[title] = (obj, refined)
    rows.append({"method": title, "seconds": seconds,
                 "seconds_with_compile": time.perf_counter() - tick,
                 "fourier_error": metrics.fourier_error(
                     obj, refined, coarse.layout, coarse.amplitudes)})
  reference_row = rows[0]
  for row in rows:
    row["error_vs_dm"] = row["fourier_error"] / reference_row[
        "fourier_error"] - 1
    row["time_vs_dm"] = row["seconds"] / reference_row["seconds"]
    print(f"{row['method']}: Fourier error {row['fourier_error']:.5f} "
          f"({row['error_vs_dm']:+.1%} against DM-{n}), {row['seconds']:.2f} "
          f"s ({row['time_vs_dm']:.1%} of DM-{n}'s)", flush=True)
  full_error = metrics.fourier_error(dm_full.object, dm_full.probe,
                                     scan.layout, scan.amplitudes)
  dm_coarse = solvers[f"DM-{n}"]
  rows_holdout, panels_extra, stages = [], [], Stages(2)
  if FLAGS.learned_fine_tune_epochs > 0:
    # The context reference: DM-N from the calibrated probe (the model's).
    dm_calibrated = reconstructors.reconstruct(
        "dm", coarse.amplitudes, coarse.probe, coarse.layout,
        coarse.object_shape, dm_config(n))
    print(f"DM-{n} from the calibrated probe at {h}x{w}: "
          f"{dm_calibrated.seconds:.1f} s", flush=True)
    estimates, lower_scan, lower_region, tuned_obj = holdout(
        model, coarse, stages)
    # Sanity and context: the whole-scan reconstructions on the same region.
    estimates += [
        (f"DM-{n} from the calibrated probe, whole scan",
         dm_calibrated.object, None),
        (f"LSQML-{n}, whole scan", solvers[f"LSQML-{n}"].object, None),
        ("generic model, whole scan",
         learned_runs["learned, calibrated probe (any_scan)"][0], None)]
    references = (dm_coarse.object, dm_calibrated.object)
    save_holdout(os.path.join(FLAGS.learned_reports_dir,
                              "siemens_star_learned.npz"),
                 estimates, references, lower_region,
                 dict(iterations=n,
                      fine_tune_epochs=FLAGS.learned_fine_tune_epochs))
    rows_holdout = holdout_rows(estimates, references, lower_region)
    panels_extra = [("hold-out: fine-tuned on the upper half,\nthe lower half",
                     lower_scan, tuned_obj, coarse.probe)]
  curves = {}
  for name, result in solvers.items():
    count = len(result.fourier_error)
    curves[f"{name} ({h}x{w})"] = {
        "seconds": np.arange(1, count + 1) * result.seconds_per_iteration,
        "fourier_error": np.asarray(result.fourier_error)}
  points = [(row["method"].split(" (")[0], row["seconds"],
             row["fourier_error"]) for row in rows[2:]]
  panels = [(f"DM-{n}, {h}x{w}", coarse, dm_coarse.object, dm_coarse.probe),
            (f"LSQML-{n}, {h}x{w}", coarse, solvers[f"LSQML-{n}"].object,
             solvers[f"LSQML-{n}"].probe)]
  for title, (obj, probe) in list(learned_runs.items())[:2]:
    short = title.replace(" (any_scan)", "").replace(
        " (any_scan_refine_probe)", "").replace(" + ", "\n+ ")
    panels.append((short, coarse, obj, probe))
  panels += panels_extra
  draw_learned(FLAGS.learned_out, curves, points, panels,
               f"Measured Siemens star, {len(coarse.amplitudes)} patterns "
               f"cropped to {h}x{w}: a generic model trained on simulated "
               f"scans only ({os.path.basename(os.path.dirname(model.path))}), "
               f"DM and LSQML")
  lines = [
      "# The measured Siemens star: a generic learned model, DM and LSQML\n",
      f"`{' '.join(['python tools/siemens_star.py'] + sys.argv[1:])}` on "
      f"{machine.cpu_description()}.\n",
      f"Model: `{model.path}` ({h}x{w} patterns, trained on simulated scans "
      f"only, never on the star's geometry). {crop_line[0].upper()}"
      f"{crop_line[1:]}. Its probe: {FLAGS.learned_probe_iterations} DM "
      f"iterations with probe refinement on the full-resolution scan "
      f"({calibration_seconds:.1f} s, not counted below).\n",
      f"Fourier errors on the {h}x{w} crop of the {len(coarse.amplitudes)} "
      f"patterns, each method with its own (refined) probe; seconds in the "
      f"steady state (iterations x seconds per iteration; one warm call of "
      f"the model), and with tracing / compilation. DM-{n} at the full "
      f"{big_h}x{big_w} (another data set) ends at {full_error:.5f} in "
      f"{n * dm_full.seconds_per_iteration:.1f} s.\n",
      f"| method | Fourier error | against DM-{n} | seconds | with compile "
      f"| share of DM-{n}'s time |", "|---|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['method']} | {row['fourier_error']:.5f} | "
                 f"{row['error_vs_dm']:+.1%} | {row['seconds']:.2f} | "
                 f"{row['seconds_with_compile']:.1f} | "
                 f"{row['time_vs_dm']:.1%} |")
  alone = rows[2]
  met = alone["time_vs_dm"] <= 0.1 and alone["error_vs_dm"] <= 0.05
  lines.append(
      f"\nTarget (issue 26): the generic model alone in <= 1/10 of DM-{n}'s "
      f"time with a Fourier error within 5% of DM-{n}'s: "
      f"{alone['time_vs_dm']:.1%} of the time, {alone['error_vs_dm']:+.1%} "
      f"in error: {'met' if met else 'not met'} (the calibration's "
      f"{calibration_seconds:.1f} s not counted).")
  if rows_holdout:
    lines += holdout_lines(rows_holdout, n, FLAGS.learned_fine_tune_epochs,
                           stages.times)
  report = os.path.join(FLAGS.learned_reports_dir, "siemens_star_learned.md")
  files.write_text(report, "\n".join(lines) + "\n", make_parent=True)
  files.write_json(
      os.path.join(FLAGS.learned_reports_dir, "siemens_star_learned.json"),
      {"model": model.path, "pattern_shape": [h, w], "factor": factor,
       "calibration_seconds": calibration_seconds,
       "full_resolution_dm_fourier_error": full_error,
       "rows": rows, "holdout": rows_holdout, "stages": stages.times,
       "curves": {name: {k: np.asarray(v).tolist() for k, v in c.items()}
                  for name, c in curves.items()}}, indent=1)
  print("\n".join(lines[4:]))
  print(f"wrote {FLAGS.learned_out} and {report}")


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  if not os.path.isfile(FLAGS.data):
    raise UserError(f"--data={FLAGS.data} does not exist (the tike "
                    f"siemens-star-small.npz.bz2 file)")
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    raise UserError(f"--out folder {out_dir} does not exist")
  if FLAGS.iterations <= FLAGS.probe_start:
    raise UserError(f"--iterations={FLAGS.iterations} must exceed "
                    f"--probe_start={FLAGS.probe_start}")
  if FLAGS.learned_rescore:
    rescore()
    return
  if FLAGS.learned:
    default_model()  # one line if missing, before the scan is read
  scan = readers.read_scan(FLAGS.data)
  count, h, w = scan.amplitudes.shape
  print(f"read {FLAGS.data}: {count} patterns of {h}x{w}, object "
        f"{scan.object_shape[0]}x{scan.object_shape[1]}")
  model = None
  if FLAGS.learned:
    if not os.path.isfile("tools/make_tfrecords.py"):
      raise UserError("--learned runs the package's tools/ commands: run it "
                      "from the repository root")
    if FLAGS.learned_probe_iterations <= FLAGS.probe_start:
      raise UserError(f"--learned_probe_iterations="
                      f"{FLAGS.learned_probe_iterations} must exceed "
                      f"--probe_start={FLAGS.probe_start}")
    model = AnyScanModel(default_model())  # one line if missing or unfit
    try:
      resample.crop_factor((h, w), model.pattern_shape)
    except ValueError as e:
      raise UserError(f"--learned_model {model.path}: {e} (the star's "
                      f"patterns, the model's)") from None
    if FLAGS.learned_fine_tune_epochs > 0:
      network_flags(FLAGS.learned_run or os.path.join(
          "runs", os.path.basename(os.path.dirname(model.path))))
  result = reconstructors.reconstruct(
      "dm", scan.amplitudes, scan.probe, scan.layout, scan.object_shape,
      dm_config(FLAGS.iterations))
  print(f"DM: {result.seconds:.1f} s, {result.seconds_per_iteration:.3f} s per "
        f"iteration; chi {result.chi[-1]:.2e}, Fourier error "
        f"{result.fourier_error[-1]:.2e}")
  if FLAGS.save:
    if not FLAGS.save.endswith(".npz"):
      raise UserError(f"--save={FLAGS.save} must end in .npz")
    files.save_npz(FLAGS.save, object=result.object, probe=result.probe,
                   layout=scan.layout, chi=result.chi,
                   fourier_error=result.fourier_error)
  draw(FLAGS.out, scan, result)
  print(f"wrote {FLAGS.out}")
  if FLAGS.learned:
    learned(scan, result, model)


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
