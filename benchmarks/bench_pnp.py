r"""Plug-and-play against LSQML and its best linear filter, with the learned prior and BM3D.

  python benchmarks/bench_pnp.py --data_dir=tfrecords/small_dense_photos \
      [--split=test] [--scans=8] [--photons=1e4] [--iterations=200] \
      [--chunk=10] [--sigma_start=0.1] [--sigma_end=0.01] \
      [--domain=amplitude_phase] [--first_sigma_scale=2] \
      [--noise_model=poisson] [--data_steps=lsqml] [--prior=DIR] \
      [--bm3d] [--blur=0.7,1,1.5,2]

Reads --scans scans of a dataset's split (simulated, with their objects),
redraws them with Poisson noise at --photons per pattern (`evaluation.doses`;
0 keeps them as they are), and reconstructs them from a flat start with the
known probe:

- LSQML for --iterations (the data steps alone; DM with --data_steps=dm),
  and the same objects blurred with each Gaussian width of --blur (real and
  imaginary parts): the best linear filter of the maximum-likelihood estimate;
- plug-and-play (`reconstructors` method "pnp") with the learned prior
  (--prior, default the shipped one) and, with --bm3d (the `bm3d` package,
  a benchmark-only dependency), with BM3D as the prior, the same rounds and
  noise levels.

Prints the CPU, then per method amplitude and phase PSNR and SSIM on the
illuminated region (constant phase offset removed), mean over the scans, and
seconds per scan. Tune on a split you do not report (e.g. a train split of
photographs) and report on the test split.
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np
from scipy import ndimage

from ptychonet_tf import prior
from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import pnp
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.prior import objects as prior_objects
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "A simulated dataset (with objects).")
flags.DEFINE_enum("split", "test", ["train", "test"], "The split to read.")
flags.DEFINE_integer("scans", 8, "Scans to reconstruct.")
flags.DEFINE_float("photons", 1e4, "Photons per pattern of the redrawn "
                   "noise; 0 keeps the scans as they are.")
flags.DEFINE_integer("iterations", 200, "LSQML data iterations (also PnP's).")
flags.DEFINE_integer("chunk", 10, "PnP: data iterations per round.")
flags.DEFINE_float("sigma_start", 0.4, "PnP: first round's noise level.")
flags.DEFINE_float("sigma_end", 0.2, "PnP: last round's noise level.")
flags.DEFINE_enum("domain", None, list(pnp.DOMAINS), "PnP: what is "
                  "denoised; default: PnP's.")
flags.DEFINE_float("first_sigma_scale", None, "PnP: the first image (real "
                   "part or amplitude) is denoised at sigma times this; "
                   "default: PnP's.")
flags.DEFINE_enum("data_steps", "lsqml", list(pnp.DATA_STEPS), "PnP: LSQML "
                  "or DM iterations between the prior steps.")
flags.DEFINE_enum("noise_model", "poisson", ["gaussian", "poisson"],
                  "The data steps' likelihood.")
flags.DEFINE_float("object_reg", 1.0, "LSQML's object regulariser (of the "
                   "LSQML rows and PnP's data steps).")
flags.DEFINE_string("prior", None, "An exported prior; default: the shipped.")
flags.DEFINE_bool("bm3d", False, "Also run PnP with BM3D as the prior.")
flags.DEFINE_bool("learned", True, "Run PnP with the learned prior.")
flags.DEFINE_bool("lsqml", True, "Run LSQML alone and its blurred rows.")
flags.DEFINE_list("blur", ["0.7", "1", "1.5", "2"], "Gaussian widths (px) "
                  "of the filtered LSQML rows.")
flags.DEFINE_integer("seed", 0, "Seed of the redrawn noise.")
flags.DEFINE_float("white_noise", 0.0, "Instead of reconstructing: add "
                   "complex white Gaussian noise of this standard deviation "
                   "(per part) to the true objects and compare the Gaussian "
                   "blurs with one pass of the prior at each --prior_sigmas: "
                   "how good the prior is on these objects, apart from the "
                   "noise a reconstruction leaves.")
flags.DEFINE_list("prior_sigmas", ["0.1", "0.2", "0.3", "0.4"], "The prior's "
                  "noise levels of the --white_noise rows.")
FLAGS = flags.FLAGS


def bm3d_denoiser(x, sigma):
  """BM3D (the `bm3d` package) as a prior: callable(x [B, H, W], sigma)."""
  import bm3d  # pylint: disable=g-import-not-at-top
  return np.stack([bm3d.bm3d(image.astype(np.float64), float(s))
                   for image, s in zip(np.asarray(x), np.asarray(sigma))]
                  ).astype(np.float32)


def blur(objects, sigma):
  return np.stack([ndimage.gaussian_filter(o.real, sigma) + 1j *
                   ndimage.gaussian_filter(o.imag, sigma) for o in objects])


def white_noise_rows(truths, mask):
  """The true objects plus white noise: blurs against one prior pass."""
  rng = np.random.default_rng(FLAGS.seed)
  noisy = truths + FLAGS.white_noise * (rng.standard_normal(truths.shape) +
                                        1j * rng.standard_normal(truths.shape))
  line(f"truth + white noise {FLAGS.white_noise:g}", noisy, truths, mask, 0)
  for width in FLAGS.blur:
    line(f"  + Gaussian blur {float(width):g} px", blur(noisy, float(width)),
         truths, mask, 0)
  denoiser = prior.load(FLAGS.prior, dtype=machine.fast_policy())
  for sigma in FLAGS.prior_sigmas:
    tick = time.perf_counter()
    out = prior_objects.denoise_object(denoiser, noisy, mask.astype(
        np.float32), float(sigma)).numpy()
    line(f"  + learned prior, sigma {float(sigma):g}", out, truths, mask,
         (time.perf_counter() - tick) / len(truths))


def line(name, objects, truths, mask, seconds):
  scores = [metrics.complex_metrics(o, t, mask)
            for o, t in zip(objects, truths)]
  mean = {k: np.mean([s[k] for s in scores]) for k in scores[0]}
  print(f"  {name:55s} {mean['amplitude_psnr']:7.2f} "
        f"{mean['amplitude_ssim']:6.3f} {mean['phase_psnr']:7.2f} "
        f"{mean['phase_ssim']:6.3f} {seconds:9.2f}", flush=True)
  return mean


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not FLAGS.data_dir:
    raise UserError("--data_dir is required")
  if FLAGS.scans < 1 or FLAGS.iterations < 1 or FLAGS.chunk < 1:
    raise UserError("--scans, --iterations and --chunk must be >= 1")
  amplitudes, truths, geometry, mask = comparison.read_scored_split(
      FLAGS.data_dir, FLAGS.scans, FLAGS.split, FLAGS.photons, FLAGS.seed)
  print(machine.cpu_description())
  print(f"{FLAGS.data_dir} ({FLAGS.split}): {len(truths)} scans, "
        f"{geometry.num_positions} positions, probe "
        f"{geometry.probe_shape[0]}x{geometry.probe_shape[1]}, photons "
        f"{FLAGS.photons:g}; {metrics.region_name()}, phase offset removed")
  print(f"  {'method':55s} {'amp dB':>7s} {'SSIM':>6s} {'pha dB':>7s} "
        f"{'SSIM':>6s} {'s / scan':>9s}")
  if FLAGS.white_noise > 0:
    white_noise_rows(truths, mask)
    return
  inputs = (amplitudes, geometry.probe, geometry.layout,
            geometry.object_shape)
  settings = dict(iterations=FLAGS.iterations, chunk=FLAGS.chunk,
                  noise_model=FLAGS.noise_model, object_reg=FLAGS.object_reg,
                  progress=False)
  if FLAGS.lsqml:
    # The data steps alone (LSQML, or DM for --data_steps=dm).
    method = FLAGS.data_steps
    tick = time.perf_counter()
    fitted = reconstructors.reconstruct(
        method, *inputs, reconstructors.configure(method, **settings)).object
    seconds = (time.perf_counter() - tick) / len(truths)
    name = (f"LSQML-{FLAGS.iterations} ({FLAGS.noise_model})"
            if method == "lsqml" else f"DM-{FLAGS.iterations}, flat start")
    line(name, fitted, truths, mask, seconds)
    for width in FLAGS.blur:
      line(f"  + Gaussian blur {float(width):g} px",
           blur(fitted, float(width)), truths, mask, seconds)
  priors = []
  if FLAGS.learned:
    priors.append(("learned prior", None))
  if FLAGS.bm3d:
    priors.append(("BM3D", bm3d_denoiser))
  for name, denoiser in priors:
    config = reconstructors.configure(
        "pnp", sigma_start=FLAGS.sigma_start, sigma_end=FLAGS.sigma_end,
        prior=FLAGS.prior, denoiser=denoiser, data_steps=FLAGS.data_steps,
        **settings,
        **{k: v for k, v in (("domain", FLAGS.domain), ("first_sigma_scale",
                                                       FLAGS.first_sigma_scale))
           if v is not None})
    solver = reconstructors.build("pnp", *inputs, config)
    tick = time.perf_counter()
    objects = solver.run().object
    seconds = (time.perf_counter() - tick) / len(truths)
    line(f"PnP-{FLAGS.data_steps}, {name} ({FLAGS.chunk} it/round, sigma "
         f"{FLAGS.sigma_start:g}->{FLAGS.sigma_end:g}, {config.domain}, "
         f"x{config.first_sigma_scale:g})", objects, truths, mask, seconds)


if __name__ == "__main__":
  app.run(main)
