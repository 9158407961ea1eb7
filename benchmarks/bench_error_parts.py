r"""What a reconstruction's error is made of: bias, scale, coarse and fine.

  python benchmarks/bench_error_parts.py --saved_model=saved_models/small_dense_noisy \
      --data_dir=tfrecords/small_dense_photos [--scans=8] [--photons=1e4] \
      [--split=test] [--lowpass=4]

Reconstructs --scans scans of a dataset's split (simulated, with their
objects), redrawn with Poisson noise at --photons per pattern as `evaluate
--photons` redraws them (`evaluation.doses`, seed 0: the same draw), with a
SavedModel of this package, and prints per scan and on average, on the
illuminated region with the constant phase offset removed:

- the amplitude and phase PSNR (`evaluation.metrics.complex_metrics`);
- the amplitude PSNR after the best global scale of the estimate, and after
  the best affine map a |O| + b (least squares): how much of the error a
  wrong overall level or contrast is;
- the share of the error's power below a Gaussian low-pass of --lowpass px,
  for the amplitude and the phase: coarse error (slowly varying, what
  ptychography's data fix last) against fine error (detail the prior has
  to supply).

What it is for: deciding whether a model's remaining error calls for a
correction of level, more data iterations (coarse phase) or a stronger
prior (fine detail).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np
from scipy import ndimage

from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("saved_model", None, "The SavedModel (--export_dir or "
                    "one version of it).")
flags.DEFINE_string("data_dir", None, "A simulated dataset (with objects).")
flags.DEFINE_enum("split", "test", ["train", "test"], "The split to read.")
flags.DEFINE_integer("scans", 8, "Scans to reconstruct.")
flags.DEFINE_float("photons", 1e4, "Photons per pattern of the redrawn "
                   "noise; 0 keeps the scans as they are.")
flags.DEFINE_integer("seed", 0, "Seed of the redrawn noise (evaluate's: 0).")
flags.DEFINE_float("lowpass", 4.0, "Width in px of the Gaussian low-pass "
                   "that splits the error into coarse and fine.")
FLAGS = flags.FLAGS


def psnr_of(estimate, truth):
  """PSNR in dB of 1-D arrays, the range of `truth` as the peak."""
  peak = truth.max() - truth.min()
  return float(10 * np.log10(peak ** 2 / np.mean((estimate - truth) ** 2)))


def coarse_share(error, mask, width):
  """The share of sum(error^2) on `mask` in its Gaussian low-pass."""
  low = ndimage.gaussian_filter(np.where(mask, error, 0.0), width)
  return float(np.sum(low[mask] ** 2) / np.sum(error[mask] ** 2))


def error_parts(estimate, truth, mask, width):
  """The row of one scan (see the module docstring): dict of floats."""
  scores = metrics.complex_metrics(estimate, truth, mask)
  aligned = (np.asarray(estimate, np.complex128) *
             np.exp(1j * scores["phase_offset"]))
  amp, true_amp = np.abs(aligned), np.abs(truth)
  a, t = amp[mask], true_amp[mask]
  scale = float(np.sum(a * t) / np.sum(a * a))
  design = np.stack([a, np.ones_like(a)], axis=1)
  affine, *_ = np.linalg.lstsq(design, t, rcond=None)
  phase_error = metrics.aligned_phase(aligned, truth) - np.angle(truth)
  return dict(amplitude_psnr=scores["amplitude_psnr"],
              phase_psnr=scores["phase_psnr"],
              scaled_psnr=psnr_of(scale * a, t), scale=scale,
              affine_psnr=psnr_of(design @ affine, t),
              amplitude_coarse=coarse_share(amp - true_amp, mask, width),
              phase_coarse=coarse_share(phase_error, mask, width))


COLUMNS = (("amplitude_psnr", "amp dB", "7.2f"), ("phase_psnr", "pha dB",
                                                  "7.2f"),
           ("scaled_psnr", "scaled", "7.2f"), ("scale", "scale", "6.3f"),
           ("affine_psnr", "affine", "7.2f"),
           ("amplitude_coarse", "amp coarse", "10.2f"),
           ("phase_coarse", "pha coarse", "10.2f"))


def row(name, values):
  cells = " ".join(f"{values[key]:{fmt}}".rjust(max(len(title), 6))
                   for key, title, fmt in COLUMNS)
  print(f"  {name:8s} {cells}", flush=True)


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not FLAGS.data_dir or not FLAGS.saved_model:
    raise UserError("--data_dir and --saved_model are required")
  if FLAGS.scans < 1 or not FLAGS.lowpass > 0:
    raise UserError("--scans must be >= 1 and --lowpass > 0")
  amplitudes, truths, geometry, mask = comparison.read_scored_split(
      FLAGS.data_dir, FLAGS.scans, FLAGS.split, FLAGS.photons, FLAGS.seed)
  model = comparison.load_predictor(FLAGS.saved_model, geometry)
  print(f"{FLAGS.saved_model} on {FLAGS.data_dir} ({FLAGS.split}), "
        f"{len(truths)} scans, photons {FLAGS.photons:g}; "
        f"{metrics.region_name()}, phase offset removed; coarse: the "
        f"error's power share below a {FLAGS.lowpass:g} px Gaussian")
  print("  " + "scan".ljust(8) + " " + " ".join(
      title.rjust(max(len(title), 6)) for _, title, _ in COLUMNS))
  rows = []
  for i, (scan, truth) in enumerate(zip(amplitudes, truths)):
    rows.append(error_parts(model(scan), truth, mask, FLAGS.lowpass))
    row(str(i), rows[-1])
  row("mean", {key: float(np.mean([r[key] for r in rows]))
               for key, _, _ in COLUMNS})


if __name__ == "__main__":
  app.run(main)
