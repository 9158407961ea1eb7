r"""LSQML against DM on simulated scans: PSNR, SSIM and seconds per iteration.

  python benchmarks/bench_lsqml.py [--config=small_dense] [--scans=4] \
      [--iterations=300] [--lsqml_batch_size=10] [--lsqml_grouping=sparse] \
      [--noise_model=gaussian] [--object_reg=0.1] [--photons=0] [--nodm]

Simulates --scans test scans of configs/<config>.flags (geometry, object
ranges, image source; any experiment flag given here wins over the file,
e.g. --photons=1e6 or --images=procedural) from the test pool of its images
(for small_dense: the embedded photographs camera, moon, coins), with the
known probe, and reconstructs them all at once (one batch) from a flat start
with LSQML and with DM for --iterations each. Prints the CPU, then per method
amplitude and phase PSNR and SSIM (`metrics.complex_metrics` on
`metrics.illuminated_region`: constant phase offset removed), mean and
minimum over the scans, the final Fourier error and the steady-state seconds
per iteration (for the batch, and per scan).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.data import images as images_lib
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

experiment_flags.define_experiment_flags()
flags.DEFINE_string("config", "small_dense", "Config name under configs/ "
                    "(its flags are read first; the command line wins).")
flags.DEFINE_integer("scans", 4, "Test scans to simulate and reconstruct.")
flags.DEFINE_integer("iterations", 300, "LSQML and DM iterations.")
flags.DEFINE_integer("lsqml_batch_size", 10, "LSQML: positions per update.")
flags.DEFINE_enum("lsqml_grouping", "sparse", list(lsqml.GROUPINGS),
                  "LSQML: how positions are batched.")
flags.DEFINE_enum("noise_model", "gaussian", list(lsqml.NOISE_MODELS),
                  "LSQML: likelihood.")
flags.DEFINE_float("object_reg", 0.1, "LSQML: object regulariser.")
flags.DEFINE_bool("dm", True, "Also run DM (the baseline to compare with).")
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_config():
  """Re-parses the flags as configs/<config>.flags then the command line."""
  path = os.path.join(REPO, "configs", f"{FLAGS.config}.flags")
  if not os.path.isfile(path):
    raise UserError(f"--config={FLAGS.config} has no file {path}")
  cwd = os.getcwd()
  os.chdir(REPO)  # flagfiles include configs/base.flags relative to the repo
  try:
    FLAGS([sys.argv[0], f"--flagfile={path}", *sys.argv[1:]])
  finally:
    os.chdir(cwd)
  return experiment_flags.simulation_config()


def simulate(config, count, seed):
  """(geometry, truths complex64 [S, H, W], amplitudes float32 [S, N, h, w])."""
  geometry = geometry_lib.make_geometry(config.geometry)
  _, pool = images_lib.open_image_pools(FLAGS.images)
  cache = images_lib.ImageCache()
  truths = np.stack([simulator.random_object(pool, geometry.object_shape,
                                             config.object,
                                             simulator.scan_rng(seed, "test", i),
                                             cache)
                     for i in range(count)])
  amplitudes = simulator.Simulator(geometry, config.photons).amplitudes(
      truths, seed)
  return geometry, truths, amplitudes


def report(name, result, truths, mask, batch):
  """One line per method: mean (min) PSNR and SSIM, error, seconds."""
  scores = [metrics.complex_metrics(o, t, mask)
            for o, t in zip(result.object, truths)]
  cells = []
  for key in ("amplitude_psnr", "phase_psnr", "amplitude_ssim", "phase_ssim"):
    values = np.array([s[key] for s in scores])
    digits = 2 if key.endswith("psnr") else 4
    cells.append(f"{values.mean():.{digits}f} ({values.min():.{digits}f})")
  per = result.seconds_per_iteration
  print(f"  {name:22s} " + " ".join(f"{c:>17s}" for c in cells) +
        f" {float(np.mean(result.fourier_error[-1])):10.2e}"
        f" {per:9.4f} {per / batch:9.4f}")


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  config = read_config()
  if FLAGS.scans < 1 or FLAGS.iterations < 20:
    raise UserError(f"--scans={FLAGS.scans} must be >= 1 and --iterations="
                    f"{FLAGS.iterations} >= 20 (the first chunk of 10 is the "
                    f"warm-up of the timing)")
  print(f"CPU: {machine.cpu_description()}")
  geometry, truths, amplitudes = simulate(config, FLAGS.scans, FLAGS.seed)
  count, (h, w) = geometry.num_positions, geometry.probe_shape
  shape = geometry.object_shape
  print(f"{FLAGS.config}: {FLAGS.scans} test scans of '{FLAGS.images}', "
        f"probe {h}x{w}, {count} positions, object {shape[0]}x{shape[1]}, "
        f"photons {config.photons:g}; flat start, known probe, "
        f"{FLAGS.iterations} iterations, all scans in one batch")
  mask = metrics.illuminated_region(geometry.layout, shape, geometry.probe)
  print(f"  {'method':22s} {'amplitude PSNR':>17s} {'phase PSNR':>17s} "
        f"{'amplitude SSIM':>17s} {'phase SSIM':>17s} {'F. error':>10s} "
        f"{'s/it':>9s} {'s/it/scan':>9s}")
  print(f"  {'':22s} {'mean (min) dB':>17s}")
  lsqml_config = lsqml.LSQMLConfig(
      iterations=FLAGS.iterations, batch_size=FLAGS.lsqml_batch_size,
      grouping=FLAGS.lsqml_grouping, noise_model=FLAGS.noise_model, object_reg=FLAGS.object_reg,
      init="ones", progress=False)
  result = reconstructors.reconstruct("lsqml", amplitudes, geometry.probe,
                                      geometry.layout, shape, lsqml_config)
  report(f"LSQML-{FLAGS.iterations} (K={FLAGS.lsqml_batch_size})", result,
         truths, mask, FLAGS.scans)
  if FLAGS.dm:
    result = reconstructors.reconstruct(
        "dm", amplitudes, geometry.probe, geometry.layout, shape,
        dm.DMConfig(iterations=FLAGS.iterations, init="ones", progress=False))
    report(f"DM-{FLAGS.iterations}", result, truths, mask, FLAGS.scans)


if __name__ == "__main__":
  app.run(main)
