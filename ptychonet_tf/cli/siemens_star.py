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

With --learned it also runs the learned model on the measured star, trained
only on simulated objects (sim-to-real; about 10 minutes on 2 cores), each
stage a printed command that resumes when run again:

1. tools/make_tfrecords.py --scans: the measured scan as a dataset without
   objects (tfrecords/siemens_star_measured), whose geometry.npz holds the
   probe --learned_probe_iterations DM iterations with probe refinement
   find;
2. tools/make_tfrecords.py --scan=file: --learned_num_train simulated objects
   (embedded and procedural images) in that geometry, with that probe
   (tfrecords/siemens_star_sim);
3. ptychonet_tf.train on them: width 16, 8 refinement steps in 4 groups
   (runs/ and saved_models/siemens_star_sim);
4. (--learned_fine_tune_epochs > 0) ptychonet_tf.train --init_from that run
   on the measured dataset with --loss=physics: a self-supervised fine-tune
   on the measured patterns themselves, no object needed
   (runs/ and saved_models/siemens_star_measured);
5. on the measured scan: DM from a flat start, the learned model alone (and
   fine-tuned), and DM started from the learned model (both DM runs from
   the file's probe guess, with probe refinement): the Fourier error
   against seconds, the phase of each, into --learned_out and
   reports/siemens_star_learned.md.

  python tools/siemens_star.py --learned
"""
import io
import os
import sys
import time

from absl import flags
import numpy as np
from PIL import Image

from ptychonet_tf import cli
from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import dm
from ptychonet_tf.cli.stages import Stages, fmt
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.data import readers
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
                  "Also train a model on simulated objects in the star's "
                  "geometry and compare it, alone and as DM's start, with DM "
                  "on the measured scan (see the module doc; ~10 min).")
flags.DEFINE_integer("learned_probe_iterations", 100,
                     "--learned: DM iterations with probe refinement that "
                     "find the training data's probe.")
flags.DEFINE_integer("learned_num_train", 40,
                     "--learned: simulated training scans (516 patterns each).")
flags.DEFINE_integer("learned_epochs", 2, "--learned: pattern epochs.")
flags.DEFINE_integer("learned_fine_tune_epochs", 1,
                     "--learned: pattern epochs of the self-supervised "
                     "fine-tune on the measured scan (then one end-to-end "
                     "epoch); 0 = no fine-tune.")
flags.DEFINE_string("learned_out", os.path.join(
    REPO, "docs", "images", "siemens_star_learned.png"),
                    "--learned: the comparison figure.")
flags.DEFINE_string("learned_reports_dir", "reports",
                    "--learned: where siemens_star_learned.md/.json go.")
FLAGS = flags.FLAGS

MEASURED = "tfrecords/siemens_star_measured"
SIMULATED = "tfrecords/siemens_star_sim"
RUN = "runs/siemens_star_sim"
EXPORT = "saved_models/siemens_star_sim"
FINE_TUNED_RUN = "runs/siemens_star_measured"
FINE_TUNED_EXPORT = "saved_models/siemens_star_measured"
# The network of stage 3, which the fine-tune (stage 4) must build again.
NETWORK_FLAGS = ["--base_channels=16", "--batch_size=1", "--refine_steps=8",
                 "--refine_groups=4", "--refine_epochs=1",
                 "--refine_steps_per_epoch=20", "--num_images=1"]


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


def draw_learned(path, scan, curves, points, panels):
  """Fourier error against seconds (curves: name -> {"seconds",
  "fourier_error"}; points: (name, seconds, error) of single-pass
  methods), and the phase of each of the panels, (title, object, probe)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(
      1, 1 + len(panels), figsize=(4.5 * (1 + len(panels)), 4.4),
      gridspec_kw=dict(width_ratios=[1.2] + [1] * len(panels)))
  for name, curve in curves.items():
    axes[0].semilogy(curve["seconds"], curve["fourier_error"], label=name)
  for (name, seconds, error), marker in zip(points, "os^"):
    axes[0].semilogy([seconds], [error], marker, markersize=9, label=name)
  axes[0].set_xlabel("seconds")
  axes[0].set_ylabel("Fourier error")
  axes[0].grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=8)
  axes[0].set_title("data misfit against time")
  for ax, (title, obj, probe) in zip(axes[1:], panels):
    cropped, inner = lit_crop(scan, probe, obj)
    phase = np.angle(cropped)
    lo, hi = np.percentile(phase[inner], [1, 99])
    ax.imshow(phase, cmap="viridis", vmin=lo, vmax=hi)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  count, h, w = scan.amplitudes.shape
  tuned = (", fine-tuned on this scan's patterns (no object)"
           if len(points) > 1 else "")
  fig.suptitle(f"Measured Siemens star, {count} patterns of {h}x{w}: a model "
               f"trained on simulated objects, alone{tuned}, and as DM's "
               f"start")
  fig.tight_layout()
  save_png(path, fig, plt)


def learned(scan, dm_result):
  """--learned: stages 1-3 as commands, then the comparison (module doc)."""
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import comparison  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import methods  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.utils import machine  # pylint: disable=g-import-not-at-top
  py = sys.executable
  fine_tune = FLAGS.learned_fine_tune_epochs > 0
  stages = Stages(4 if fine_tune else 3)
  stages.run("the measured scan as a dataset, with a refined probe", [
      py, "tools/make_tfrecords.py", f"--scans={FLAGS.data}",
      f"--out_dir={MEASURED}",
      f"--probe_iterations={FLAGS.learned_probe_iterations}",
      "--noprogress"])
  geometry = pipeline.load_dataset_info(MEASURED).geometry
  h, w = geometry.probe_shape
  calibration = os.path.join(MEASURED, "geometry.npz")
  stages.run("simulated training scans in the star's geometry", [
      py, "tools/make_tfrecords.py", "--flagfile=configs/base.flags",
      "--images=default+procedural", f"--probe_size={h},{w}", "--scan=file",
      f"--scan_file={calibration}", f"--probe_file={calibration}",
      f"--num_train={FLAGS.learned_num_train}", "--num_test=4",
      "--num_shards=4",
      "--amplitude_dtype=float16", f"--out_dir={SIMULATED}"])
  stages.run("train on them", [
      py, "-m", "ptychonet_tf.train", f"--data_dir={SIMULATED}",
      f"--model_dir={RUN}", f"--export_dir={EXPORT}",
      f"--epochs={FLAGS.learned_epochs}", "--eval_scans=2"] + NETWORK_FLAGS)
  if fine_tune:
    stages.run("fine-tune on the measured scan (self-supervised)", [
        py, "-m", "ptychonet_tf.train", f"--data_dir={MEASURED}",
        f"--init_from={RUN}", "--loss=physics",
        f"--model_dir={FINE_TUNED_RUN}", f"--export_dir={FINE_TUNED_EXPORT}",
        f"--epochs={FLAGS.learned_fine_tune_epochs}"] + NETWORK_FLAGS)
  print("\n=== the measured scan: the learned model alone, then DM from it",
        flush=True)
  predict = comparison.load_predictor(EXPORT, geometry)
  objects, seconds = methods.run_learned(predict, scan.amplitudes[None])
  start = objects[0]
  start_error = metrics.fourier_error(start, geometry.probe, scan.layout,
                                      scan.amplitudes)
  alone = [("learned model alone", seconds, start_error, start)]
  if fine_tune:
    tuned = comparison.load_predictor(FINE_TUNED_EXPORT, geometry)
    tuned_objects, tuned_seconds = methods.run_learned(
        tuned, scan.amplitudes[None])
    alone.append(("learned model fine-tuned on this scan", tuned_seconds,
                  metrics.fourier_error(tuned_objects[0], geometry.probe,
                                        scan.layout, scan.amplitudes),
                  tuned_objects[0]))
  tick = time.perf_counter()
  from_learned = reconstructors.reconstruct(
      "dm", scan.amplitudes, scan.probe, scan.layout, scan.object_shape,
      dm_config(FLAGS.iterations), initial_object=start)
  print(f"DM from the learned model: {time.perf_counter() - tick:.1f} s")
  target = float(dm_result.fourier_error[-1])
  runs, rows = {}, []
  for name, result, offset in (("DM, flat start", dm_result, 0.0),
                               ("DM from the learned model", from_learned,
                                seconds)):
    count = len(result.fourier_error)
    runs[name] = {"seconds": offset + np.arange(1, count + 1) *
                             result.seconds_per_iteration,
                  "fourier_error": np.asarray(result.fourier_error)}
    reach = metrics.first_reaching(result.fourier_error, target)
    rows.append({"method": name, "iterations": count,
                 "seconds_per_iteration": result.seconds_per_iteration,
                 "start_seconds": offset,
                 "final_fourier_error": float(result.fourier_error[-1]),
                 "reaches_dm_final_at_iteration": reach,
                 "reaches_dm_final_at_seconds":
                     None if reach is None else
                     offset + reach * result.seconds_per_iteration})
  for name, sec, error, _ in alone:
    rows.append({"method": name, "seconds": sec, "fourier_error": error})
  panels = [
      (f"DM-{FLAGS.iterations}, flat start", dm_result.object,
       dm_result.probe)]
  panels += [(f"{name} ({sec:.2f} s)", obj, geometry.probe)
             for name, sec, _, obj in alone]
  panels.append((f"learned model + DM-{FLAGS.iterations}",
                 from_learned.object, from_learned.probe))
  draw_learned(FLAGS.learned_out, scan, runs,
               [(name, sec, error) for name, sec, error, _ in alone], panels)
  dm_total = FLAGS.iterations * dm_result.seconds_per_iteration
  lines = [
      "# The measured Siemens star: learned model, DM, learned model + DM\n",
      f"`python tools/siemens_star.py --learned` on "
      f"{machine.cpu_description()}; stages: " + ", ".join(
          f"{title} {fmt(sec)}" for title, sec in stages.times) + ".\n",
      f"DM-{FLAGS.iterations} from a flat start ends at Fourier error "
      f"{target:.5f} ({dm_total:.1f} s at "
      f"{dm_result.seconds_per_iteration:.3f} s per iteration).\n",
      "| method | Fourier error at the end | first reaches DM's final error "
      "| seconds then | share of DM's time |", "|---|---|---|---|---|"]
  for row in rows[:2]:
    reach = row["reaches_dm_final_at_iteration"]
    when = row["reaches_dm_final_at_seconds"]
    lines.append(
        f"| {row['method']} | {row['final_fourier_error']:.5f} | "
        + ("never |  |  |" if reach is None else
           f"iteration {reach} | {when:.1f} | {when / dm_total:.1%} |"))
  for name, sec, error, _ in alone:
    lines.append(f"| {name} | {error:.5f} (the calibrated probe) "
                 f"| | {sec:.2f} | {sec / dm_total:.1%} |")
  report = os.path.join(FLAGS.learned_reports_dir, "siemens_star_learned.md")
  files.write_text(report, "\n".join(lines) + "\n", make_parent=True)
  files.write_json(
      os.path.join(FLAGS.learned_reports_dir, "siemens_star_learned.json"),
      {"rows": rows, "dm_final_fourier_error": target,
       "curves": {name: {k: np.asarray(v).tolist() for k, v in c.items()}
                  for name, c in runs.items()},
       "stages": stages.times}, indent=1)
  print("\n".join(lines[3:]))
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
  scan = readers.read_scan(FLAGS.data)
  count, h, w = scan.amplitudes.shape
  print(f"read {FLAGS.data}: {count} patterns of {h}x{w}, object "
        f"{scan.object_shape[0]}x{scan.object_shape[1]}")
  if FLAGS.learned and not os.path.isfile("configs/base.flags"):
    raise UserError("--learned runs the package's commands on configs/: run "
                    "it from the repository root")
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
    learned(scan, result)


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
