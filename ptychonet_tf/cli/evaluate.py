r"""Evaluates PtychoNet, DM and PtychoNet-started DM on a dataset's test split.

  python -m ptychonet_tf.evaluate --flagfile=configs/small_sparse.flags \
      --data_dir=tfrecords/small_sparse \
      --saved_model=mse=saved_models/small_sparse \
      --out_dir=reports/small_sparse

Every test scan is reconstructed by each PtychoNet SavedModel given
(`--saved_model=NAME=DIR,...`; the first one also starts DM), by DM from a
random and from a flat start, by DM started from the first model's output
(the paper's section 6), by "DM at equal time": DM from a flat start for
as many iterations as fit in the first model's seconds per scan, and, with
--run_lsqml, by LSQML from a flat start for --dm_iterations. Writes to
--out_dir: `results.json` (per-scan and mean metrics, timings, curves),
`results.md` and `report.md` (tables and figures), `amplitude.png` and
`phase.png` (the paper's Tables 1-4 layout), `curves.png` (Figure 3: chi and
object MSE against iteration for each start) and `time_to_quality.png`
(amplitude and phase PSNR against seconds per scan: DM from each start after
every --curve_every iterations, and each learned model as a point).

Dose sweep: `--photons=1e3,1e4,1e5,inf` on a noise-free dataset also
reconstructs every test scan redrawn with Poisson noise at each dose (mean
photons per pattern; inf = noise free; `evaluation.doses`) by each learned
model, DM from a flat start (with --run_dm), LSQML from a flat start (with
--run_lsqml) and DM started from the first model, and writes `doses.md`,
`doses.json` and `doses.png` (PSNR against dose), a section of report.md:

  python -m ptychonet_tf.evaluate --flagfile=configs/small_dense.flags \
      --data_dir=tfrecords/small_dense_photos \
      --saved_model=saved_models/small_dense --photons=1e3,1e4,1e5,inf \
      --out_dir=reports/small_dense_doses

Metrics come in two conventions: "scanned" (this project's: constant phase
offset removed, pixels the probe illuminates with at least --region_fraction
of the maximum summed intensity) and "paper" (raw |O| and
angle(O) over the whole object). Seconds per scan: PtychoNet one scan per call
(batch 1, after a warm-up call); DM its steady-state time per iteration for a
batch of --dm_batch scans, times the iterations, divided by the batch size
(LSQML likewise).
"""
import dataclasses
import math
import os
import sys

from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import doses as doses_lib
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

# --data_dir and the experiment flags (those of configs/*.flags).
experiment_flags.define_experiment_flags()
flags.DEFINE_list("saved_model", [],
                  "PtychoNet SavedModels as NAME=DIR (or DIR): a TF Serving "
                  "base directory or one version directory. The first one "
                  "starts DM.")
flags.DEFINE_string("out_dir", None, "Where the tables and figures go.")
flags.DEFINE_string("title", None, "Report title (default: the out_dir's name).")
flags.DEFINE_integer("dm_iterations", 300, "DM iterations (the paper's 300).")
flags.DEFINE_integer("dm_batch", 4, "Scans reconstructed together by DM.")
flags.DEFINE_integer("dm_seed", 0, "Seed of DM's random initial objects.")
flags.DEFINE_integer("curve_every", 10,
                     "Object MSE against the truth is recorded every this many "
                     "DM iterations (Figure 3).")
flags.DEFINE_integer("num_scans", 0, "Test scans to use; 0 = all.",
                     lower_bound=0)
flags.DEFINE_integer("num_panels", 3, "Test objects drawn in the panels.",
                     lower_bound=0)
flags.DEFINE_float("region_fraction", 0.01,
                   "The scanned region of the metrics: pixels whose summed "
                   "illumination sum_j |P|^2 reaches this fraction of its maximum.")
flags.register_validator(
    "region_fraction", lambda v: v is not None and 0 < v <= 1,
    message="must be in (0, 1]: a fraction of the maximum illumination")
flags.DEFINE_bool("dm_flat_start", True,
                  "Also run DM from a flat object (amplitude 1, phase 0): a "
                  "start without any information, to tell how much of "
                  "PtychoNet+DM's gain is just not starting from noise.")
flags.DEFINE_bool("run_dm", True, "Also run DM from a random start.")
flags.DEFINE_bool("dm_equal_time", True,
                  "With a --saved_model and DM: add the row 'DM at equal "
                  "time', DM from a flat start for as many iterations as fit "
                  "in the first model's seconds per scan.")
flags.DEFINE_bool("run_lsqml", False,
                  "Also run LSQML (least-squares maximum likelihood, known "
                  "probe) from a flat start for --dm_iterations, in batches "
                  "of --dm_batch scans: the row 'LSQML (N it, flat start)'.")
flags.DEFINE_integer("lsqml_batch_size", 10, "LSQML: positions updated "
                     "together.")
flags.DEFINE_bool("run_pnp", False,
                  "Also run plug-and-play (LSQML rounds with the learned "
                  "image prior, method pnp) from a flat start for "
                  "--dm_iterations data iterations: the row 'PnP (N it, "
                  "learned prior)', and a row of the dose sweep.")
flags.DEFINE_enum("pnp_data_steps", "lsqml", ["lsqml", "dm"], "--run_pnp's "
                  "data steps: LSQML (noisy data) or DM (noise-free data; "
                  "docs/baselines.md).")
flags.DEFINE_list("pnp_sigma", None, "--run_pnp's first and last noise "
                  "levels, e.g. 0.2,0.05 (default: PnPConfig's).")
flags.DEFINE_string("prior", None, "The exported prior of --run_pnp (a "
                    "train_prior --export_dir); default: the shipped one.")
flags.DEFINE_integer("threads", 0, "CPU threads TensorFlow may use (its intra- "
                     "and inter-op pools); 0 = all cores. Timings in the "
                     "report are taken with it.")
FLAGS = flags.FLAGS


def pnp_sigma():
  """--pnp_sigma as (first, last), or None (UserError unless two numbers)."""
  if not FLAGS.pnp_sigma:
    return None
  try:
    first, last = (float(v) for v in FLAGS.pnp_sigma)
  except ValueError as e:
    raise UserError(f"--pnp_sigma={','.join(FLAGS.pnp_sigma)} must be two "
                    f"numbers, first,last") from e
  return first, last


def check_flags():
  """Flag ranges and the output folder, checked before any computation: a
  read-only or full disk is found now, not after the reconstructions."""
  if FLAGS["photons"].present:
    limits.check_photons(doses_lib.parse_doses(FLAGS.photons))
  if FLAGS.dm_batch < 1:
    raise UserError(f"--dm_batch={FLAGS.dm_batch} must be >= 1")
  files.check_writable_dir(FLAGS.out_dir, "--out_dir")


def parse_models(specs):
  """[(name, dir)] from NAME=DIR or DIR items."""
  models = []
  for i, spec in enumerate(specs):
    # The last "=" splits: names may hold one ("PtychoNet (K=30)=DIR").
    name, sep, path = spec.rpartition("=")
    if not sep:
      name, path = ("PtychoNet" if i == 0 else f"PtychoNet-{i + 1}"), spec
    else:
      name = f"PtychoNet-{name.upper()}" if name.lower() in ("mse", "dse") else name
    if not os.path.isdir(path):
      raise UserError(f"SavedModel directory {path} does not exist")
    models.append((name, path))
  if len({n for n, _ in models}) != len(models):
    raise UserError(f"--saved_model names repeat: {specs}")
  return models


def dataset_photons(info):
  """The dose a dataset was simulated with (doses_lib.NOISE_FREE if none)."""
  identity = info.identity or {}
  photons = float(identity.get("simulation", {}).get("photons", 0.0) or 0.0)
  return doses_lib.NOISE_FREE if photons <= 0 else photons


def requested_doses(info):
  """The doses of a sweep asked for by --photons, [] for none.

  --photons names the dataset's own dose when a dataset's flagfile is given
  (no sweep then); other doses need a noise-free dataset to draw them from.
  """
  if not FLAGS["photons"].present:
    return []
  doses = experiment_flags.photon_doses()
  own = dataset_photons(info)
  if doses == [own]:
    return []
  if not math.isinf(own):
    raise UserError(
        f"--photons={','.join(FLAGS.photons)}: dataset {FLAGS.data_dir} was "
        f"simulated with {own:g} photons per pattern; a dose sweep redraws "
        f"the noise of a noise-free dataset (make one without --photons)")
  return doses


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.require_flags("data_dir", "out_dir")
  if os.path.isfile(FLAGS.out_dir):
    raise UserError(f"--out_dir {FLAGS.out_dir} is a file; expected a directory")
  check_flags()
  settings = comparison.ComparisonSettings(
      data_dir=FLAGS.data_dir, dm_iterations=FLAGS.dm_iterations,
      dm_batch=FLAGS.dm_batch, dm_seed=FLAGS.dm_seed,
      curve_every=FLAGS.curve_every, region_fraction=FLAGS.region_fraction,
      run_dm=FLAGS.run_dm, dm_flat_start=FLAGS.dm_flat_start,
      dm_equal_time=FLAGS.dm_equal_time, run_lsqml=FLAGS.run_lsqml,
      lsqml_batch_size=FLAGS.lsqml_batch_size, run_pnp=FLAGS.run_pnp,
      prior=FLAGS.prior, pnp_data_steps=FLAGS.pnp_data_steps,
      pnp_sigma=pnp_sigma(), num_panels=FLAGS.num_panels,
      seed=FLAGS.seed, command=sys.argv[1:])
  machine.set_threads(FLAGS.threads)
  models = parse_models(FLAGS.saved_model)
  if not (models or FLAGS.run_dm or FLAGS.run_lsqml or FLAGS.run_pnp):
    raise UserError("nothing to evaluate: give --saved_model, --run_dm, "
                    "--run_lsqml or --run_pnp")
  experiment_flags.require_dataset(FLAGS.data_dir)
  split = comparison.read_test_split(FLAGS.data_dir, FLAGS.num_scans)
  experiment_flags.check_geometry_flags(split[2].geometry, FLAGS.data_dir)
  settings = dataclasses.replace(settings,
                                 doses=tuple(requested_doses(split[2])))
  comparison.compare(FLAGS.data_dir, FLAGS.out_dir, models, settings,
                     title=FLAGS.title, split=split)


def run():
  cli.run_command(main, __name__, (experiment_flags.SIMULATION,
                                   experiment_flags.TRAINING))


if __name__ == "__main__":
  run()
