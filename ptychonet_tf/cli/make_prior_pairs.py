r"""Records the error plug-and-play leaves, as training pairs of the prior.

  python -m ptychonet_tf.make_prior_pairs --data_dir=tfrecords/small_dense \
      --out=runs/prior_pairs/pairs.npz [--split=train --scans=96 --first_scan=0 \
       --photons=1e4 --prior=DIR --iterations=200 --chunk=10 \
       --sigma_start=0.4 --sigma_end=0.2]

Reads --scans simulated scans of a dataset's split (with their objects),
redraws them with Poisson noise at --photons per pattern, runs plug-and-play
(`baselines.pnp`, the --prior given, by default the shipped one) and keeps
what every prior step is given, as the prior sees it next to the truth
(`prior.pairs`). Writes --out, an npz of `inputs` and `targets` (float32
[n, h, w]) and `sigma` (float32 [n], the schedule's noise level of that
step), which `train_prior --pairs` trains on. For a prior that ships, use a
dataset of redistributable images (tfrecords/small_dense: the embedded and
procedural images), never ../shared/data.
"""
import os
import time

from absl import flags
import numpy as np

from ptychonet_tf import cli
from ptychonet_tf.utils import files
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "A simulated dataset (with objects).")
flags.DEFINE_enum("split", "train", ["train", "test"], "The split to read.")
flags.DEFINE_integer("scans", 96, "Scans to run.")
flags.DEFINE_integer("first_scan", 0, "The first scan of the split to run.")
flags.DEFINE_integer("batch", 16, "Scans per plug-and-play run.")
flags.DEFINE_float("photons", 1e4, "Photons per pattern of the redrawn "
                   "noise; 0 keeps the scans as they are.")
flags.DEFINE_integer("seed", 1, "Seed of the redrawn noise.")
flags.DEFINE_string("prior", None, "The prior of the recorded runs (an "
                    "export); default: the shipped one.")
flags.DEFINE_integer("iterations", 200, "Data iterations of each run.")
flags.DEFINE_integer("chunk", 10, "Data iterations per round.")
flags.DEFINE_float("sigma_start", 0.4, "First round's noise level.")
flags.DEFINE_float("sigma_end", 0.2, "Last round's noise level.")
flags.DEFINE_enum("domain", "complex", ["complex", "amplitude_phase"],
                  "What the prior denoises.")
flags.DEFINE_enum("noise_model", "poisson", ["gaussian", "poisson"],
                  "The data steps' likelihood.")
flags.DEFINE_float("object_reg", 1.0, "LSQML's object regulariser.")
flags.DEFINE_string("out", None, "The npz to write.")
flags.DEFINE_integer("threads", 0, "CPU threads TensorFlow may use (0: all).")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("data_dir", "out")
  if FLAGS.scans < 1 or FLAGS.batch < 1 or FLAGS.first_scan < 0:
    raise UserError("--scans and --batch must be >= 1, --first_scan >= 0")
  machine.set_threads(FLAGS.threads)
  # pylint: disable=g-import-not-at-top
  from ptychonet_tf import reconstructors
  from ptychonet_tf.evaluation import comparison
  from ptychonet_tf.evaluation import doses
  from ptychonet_tf.evaluation import metrics
  from ptychonet_tf.prior import pairs
  amplitudes, truths, info = comparison.read_test_split(
      FLAGS.data_dir, FLAGS.first_scan + FLAGS.scans, split=FLAGS.split)
  amplitudes = amplitudes[FLAGS.first_scan:FLAGS.first_scan + FLAGS.scans]
  truths = truths[FLAGS.first_scan:FLAGS.first_scan + FLAGS.scans]
  if not len(truths):
    raise UserError(f"{FLAGS.data_dir} ({FLAGS.split}) has no scan from "
                    f"{FLAGS.first_scan} on")
  geometry = info.geometry
  if FLAGS.photons > 0:
    amplitudes = doses.noisy_scans(amplitudes, FLAGS.photons, FLAGS.seed)
  lit = metrics.illuminated_region(geometry.layout, geometry.object_shape,
                                   geometry.probe)
  config = reconstructors.configure(
      "pnp", iterations=FLAGS.iterations, chunk=FLAGS.chunk,
      sigma_start=FLAGS.sigma_start, sigma_end=FLAGS.sigma_end,
      domain=FLAGS.domain, prior=FLAGS.prior, noise_model=FLAGS.noise_model,
      object_reg=FLAGS.object_reg, progress=False)
  inputs, targets, sigmas = [], [], []
  tick = time.perf_counter()
  for start in range(0, len(truths), FLAGS.batch):
    stop = min(start + FLAGS.batch, len(truths))
    states = pairs.record_pnp_states(
        amplitudes[start:stop], geometry.probe, geometry.layout,
        geometry.object_shape, config)
    for objects, sigma in states:
      x, t = pairs.scaled_pairs(objects, truths[start:stop], lit,
                                FLAGS.domain)
      inputs.append(x)
      targets.append(t)
      sigmas.append(np.full(len(x), sigma, np.float32))
    print(f"scans {stop}/{len(truths)}: {len(states)} prior steps each, "
          f"{time.perf_counter() - tick:.0f} s", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  files.save_npz(FLAGS.out, inputs=np.concatenate(inputs),
                 targets=np.concatenate(targets),
                 sigma=np.concatenate(sigmas))
  files.write_text(FLAGS.out + ".flags.txt", FLAGS.flags_into_string())
  print(f"wrote {FLAGS.out}: {sum(len(x) for x in inputs)} pairs of "
        f"{inputs[0].shape[1]}x{inputs[0].shape[2]}")


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
