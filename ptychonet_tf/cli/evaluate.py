r"""Evaluates PtychoNet, DM and PtychoNet-started DM on a dataset's test split.

  python -m ptychonet_tf.evaluate --flagfile=configs/small_sparse.flags \
      --data_dir=tfrecords/small_sparse \
      --saved_model=mse=saved_models/small_sparse \
      --out_dir=reports/small_sparse

Every test scan is reconstructed by each PtychoNet SavedModel given
(`--saved_model=NAME=DIR,...`; the first one also starts DM), by DM from a
random start and by DM started from PtychoNet's output (the paper's section
6). Writes to --out_dir: `results.json` (per-scan and mean metrics, timings,
curves), `results.md` and `report.md` (tables and figures), `amplitude.png` and
`phase.png` (the paper's Tables 1-4 layout) and `curves.png` (Figure 3: chi and
object MSE against iteration for both starts).

Metrics come in two conventions: "scanned" (this project's: constant phase
offset removed, pixels the probe illuminates with at least --region_fraction
of the maximum summed intensity) and "paper" (raw |O| and
angle(O) over the whole object). Seconds per scan: PtychoNet one scan per call
(batch 1, after a warm-up call); DM its steady-state time per iteration for a
batch of --dm_batch scans, times the iterations, divided by the batch size.
"""
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

from ptychonet_tf.cli import experiment_flags  # noqa: F401  (defines --flagfile flags)
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.evaluation import report
from ptychonet_tf.data import pipeline
from ptychonet_tf.utils.errors import UserError, report_user_errors

# --data_dir and the experiment flags come from ptychonet_tf.flags.
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
flags.DEFINE_integer("num_scans", 0, "Test scans to use; 0 = all.")
flags.DEFINE_integer("num_panels", 3, "Test objects drawn in the panels.")
flags.DEFINE_float("region_fraction", 0.01,
                   "The scanned region of the metrics: pixels whose summed "
                   "illumination sum_j |P|^2 reaches this fraction of its maximum.")
flags.DEFINE_bool("dm_flat_start", True,
                  "Also run DM from a flat object (amplitude 1, phase 0): a "
                  "start without any information, to tell how much of "
                  "PtychoNet+DM's gain is just not starting from noise.")
flags.DEFINE_bool("run_dm", True, "Also run DM from a random start.")
FLAGS = flags.FLAGS

# DM imports are deferred into functions so that --help is quick.

MEAN_OBJECT = "Mean object (reference)"


def parse_models(specs):
  """[(name, dir)] from NAME=DIR or DIR items."""
  models = []
  for i, spec in enumerate(specs):
    name, sep, path = spec.partition("=")
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


def read_test_split(data_dir, limit):
  """(amplitudes float32 [S, N, h, w], truth complex64 [S, H, W], info)."""
  info = pipeline.load_dataset_info(data_dir)
  if info.counts.get("test", 0) == 0:
    raise UserError(f"dataset {data_dir} has no test scans")
  amplitudes, truths = [], []
  for batch in pipeline.make_dataset(data_dir, "test", batch_size=8, shuffle=False,
                                     repeat=False):
    amplitudes.append(batch["amplitudes"].numpy())
    truths.append(batch["object_amplitude"].numpy()
                  * np.exp(1j * batch["object_phase"].numpy()))
    if limit and sum(len(a) for a in amplitudes) >= limit:
      break
  amplitudes = np.concatenate(amplitudes).astype(np.float32)
  truths = np.concatenate(truths).astype(np.complex64)
  if limit:
    amplitudes, truths = amplitudes[:limit], truths[:limit]
  return amplitudes, truths, info


def load_predictor(path, geometry):
  """A function amplitudes float32 [N, h, w] -> complex64 [H, W] from a SavedModel.

  The SavedModel's input and output shapes (and its layout, when it records
  one) are checked against the dataset's geometry.
  """
  import types  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.model import inference  # pylint: disable=g-import-not-at-top
  n, (h, w) = geometry.num_positions, geometry.probe_shape
  shape_of_scan = types.SimpleNamespace(
      amplitudes=np.zeros((n, h, w), np.float32), layout=geometry.layout,
      object_shape=tuple(geometry.object_shape))
  return inference.PtychoNetModel(path, shape_of_scan)


def run_ptychonet(predict, amplitudes):
  """(objects complex64 [S, H, W], median seconds per scan, one scan per call)."""
  predict(amplitudes[0])  # warm-up: loading and tracing are not reconstruction
  objects, seconds = [], []
  for scan in amplitudes:
    start = time.perf_counter()
    objects.append(predict(scan))
    seconds.append(time.perf_counter() - start)
  return np.stack(objects), float(np.median(seconds))


def run_dm(amplitudes, truths, geometry, initial, name, mask, init="random"):
  """DM over all scans in batches; the object MSE curve is taken on `mask`
  (the metrics' region) after removing the constant phase offset.

  Returns:
    (objects complex64 [S, H, W], seconds per scan, chi [T] mean over scans,
     (iterations [K], object MSE [K] mean over scans)).
  """
  from ptychonet_tf.baselines import dm  # pylint: disable=g-import-not-at-top
  config = dm.DMConfig(iterations=FLAGS.dm_iterations, init=init,
                       seed=FLAGS.dm_seed, chunk=FLAGS.curve_every, progress=False)
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  batch = max(1, FLAGS.dm_batch)
  objects, chis, per_scan, mses = [], [], [], []
  mse_iterations = []
  bar = tqdm(total=len(amplitudes) * FLAGS.dm_iterations, desc=name, unit="it",
             unit_scale=True, leave=True)
  solver = None
  for start in range(0, len(amplitudes), batch):
    amps = amplitudes[start:start + batch]
    truth = truths[start:start + batch]
    if solver is None or solver.batch != len(amps):
      solver = dm.DifferenceMap(amps, geometry.probe, geometry.layout,
                                geometry.object_shape, config)
    else:
      solver.set_amplitudes(amps)
    curve, its = [], []

    def monitor(done, obj, truth=truth, curve=curve, its=its, n=len(amps)):
      obj = np.asarray(obj).reshape((n,) + tuple(geometry.object_shape))
      aligned = [metrics.remove_phase_offset(o, t, mask) for o, t in zip(obj, truth)]
      curve.append([float(np.mean(np.abs(a - t)[mask] ** 2))
                    for a, t in zip(aligned, truth)])
      its.append(done)
      bar.update(n * (done - (its[-2] if len(its) > 1 else 0)))

    init = None if initial is None else initial[start:start + batch]
    result = solver.run(init, monitor=monitor)
    obj = np.asarray(result.object).reshape((len(amps),) + tuple(geometry.object_shape))
    objects.append(obj)
    chis.append(np.asarray(result.chi).reshape(FLAGS.dm_iterations, -1))
    per_scan.append(result.seconds_per_iteration * FLAGS.dm_iterations / len(amps))
    mses.append(np.asarray(curve).reshape(len(its), -1))
    mse_iterations = its
  bar.close()
  return (np.concatenate(objects).astype(np.complex64), float(np.mean(per_scan)),
          np.concatenate(chis, axis=1).mean(axis=1),
          (np.asarray(mse_iterations), np.concatenate(mses, axis=1).mean(axis=1)))


def score(objects, truths, mask):
  """Per-scan metrics in both conventions."""
  scanned, paper = [], []
  for estimate, truth in zip(objects, truths):
    scanned.append(metrics.complex_metrics(estimate, truth, mask))
    paper.append(metrics.paper_metrics(estimate, truth))
  return {"scanned": scanned, "paper": paper}


def write_outputs(out_dir, title, info, truths, mask, methods, curves, note):
  """results.json, results.md, report.md and the figures."""
  rows, results = [], {}
  for name, m in methods.items():
    summary = {c: report.summarize(m["scores"][c]) for c in ("scanned", "paper")}
    rows.append((name, summary, m["seconds"]))
    results[name] = {"seconds_per_scan": m["seconds"], "mean": summary,
                     "per_scan": m["scores"]}
  g = info.geometry
  panels = min(FLAGS.num_panels, len(truths))
  aligned = {name: np.stack([metrics.remove_phase_offset(o, t, mask)
                             for o, t in zip(m["objects"][:panels], truths[:panels])])
             for name, m in methods.items() if m.get("panel", True)}
  amp_range = (float(np.abs(truths).min()), float(np.abs(truths).max()))
  phase_range = (float(np.angle(truths).min()), float(np.angle(truths).max()))
  if amp_range[1] - amp_range[0] < 1e-3:
    amp_range = (0.0, 1.0)
  report.save_panels(os.path.join(out_dir, "amplitude.png"), truths[:panels], aligned,
                     "amplitude", amp_range, f"{title}: amplitude")
  report.save_panels(os.path.join(out_dir, "phase.png"), truths[:panels], aligned,
                     "phase", phase_range, f"{title}: phase (rad)")
  figures = ["amplitude.png", "phase.png"]
  if curves:
    report.save_curves(os.path.join(out_dir, "curves.png"), curves,
                       f"{title}: DM convergence, mean over {len(truths)} test scans")
    figures.append("curves.png")
  setup = (f"{len(truths)} test scans of dataset `{FLAGS.data_dir}`: "
           f"{g.num_positions} patterns of {g.probe_shape[0]}x{g.probe_shape[1]}, "
           f"object {g.object_shape[0]}x{g.object_shape[1]}; DM "
           f"{FLAGS.dm_iterations} iterations, known probe.")
  tables = ("### Illuminated region, constant phase offset removed\n\n"
            + report.markdown_table(rows, "scanned")
            + "\n\n### Paper's raw convention (whole object, no offset removal)\n\n"
            + report.markdown_table(rows, "paper"))
  report.write_text(os.path.join(out_dir, "results.md"), tables + "\n")
  speed = ""
  if "speedup" in note:
    speed = (f"\nPtychoNet is **{note['speedup']:.0f}x** faster per scan than "
             f"{FLAGS.dm_iterations} DM iterations (same machine, same run).\n")
  body = [f"# {title}\n", setup + "\n", tables + "\n", speed,
          "Mean ± standard deviation over the test scans. Conventions: the "
          "\"scanned\" tables compare only the pixels the probe illuminates "
          f"(summed intensity at least {FLAGS.region_fraction:g} of its maximum: "
          f"{mask.mean():.0%} of the object) and first remove the constant phase offset that ptychography cannot "
          "measure; the paper's tables compare |O| and angle(O) over the whole "
          "object as they are, so an unmeasurable global phase and the "
          "unilluminated border count as error there. That, and the noise-free "
          "data with the known probe, is why DM scores far above the paper's "
          f"14.39 dB here. \"{MEAN_OBJECT}\" replaces every object by a "
          "constant, its own mean amplitude and phase: a floor that a method "
          "must beat to have recovered any structure (SSIM rewards smooth "
          "flat guesses, so compare PSNR against it first).\n"]
  body += [f"![{f}]({f})\n" for f in figures]
  body.append("\nProduced by:\n\n```\npython -m ptychonet_tf.evaluate "
              + " ".join(note["argv"]) + "\n```\n")
  report.write_text(os.path.join(out_dir, "report.md"), "\n".join(body))
  report.write_json(os.path.join(out_dir, "results.json"), {
      "title": title, "data_dir": FLAGS.data_dir, "num_scans": len(truths),
      "dm_iterations": FLAGS.dm_iterations, "methods": results,
      "curves": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()}
                 for k, v in curves.items()},
      "speedup": note.get("speedup")})
  return tables


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.data_dir or not FLAGS.out_dir:
    raise UserError("--data_dir and --out_dir are required")
  if os.path.isfile(FLAGS.out_dir):
    raise UserError(f"--out_dir {FLAGS.out_dir} is a file; expected a directory")
  if FLAGS.dm_iterations < 1 or FLAGS.curve_every < 1:
    raise UserError("--dm_iterations and --curve_every must be >= 1")
  models = parse_models(FLAGS.saved_model)
  if not models and not FLAGS.run_dm:
    raise UserError("nothing to evaluate: give --saved_model or --run_dm")
  amplitudes, truths, info = read_test_split(FLAGS.data_dir, FLAGS.num_scans)
  from ptychonet_tf.cli import train  # pylint: disable=g-import-not-at-top
  train.check_geometry_flags(info.geometry, FLAGS.data_dir)
  geometry = info.geometry
  mask = metrics.illuminated_region(geometry.layout, geometry.object_shape,
                                    geometry.probe, FLAGS.region_fraction)
  title = FLAGS.title or os.path.basename(os.path.normpath(FLAGS.out_dir))
  print(f"evaluating {len(truths)} test scans of {FLAGS.data_dir}")

  methods, curves = {}, {}
  for name, path in models:
    predict = load_predictor(path, geometry)
    objects, seconds = run_ptychonet(predict, amplitudes)
    methods[name] = {"objects": objects, "seconds": seconds,
                     "scores": score(objects, truths, mask)}
    print(f"{name}: {seconds * 1e3:.1f} ms per scan")
  if FLAGS.run_dm:
    objects, seconds, chi, mse = run_dm(amplitudes, truths, geometry, None, "DM",
                                        mask)
    methods["DM"] = {"objects": objects, "seconds": seconds,
                     "scores": score(objects, truths, mask)}
    curves["random start"] = {"chi": chi, "mse_iterations": mse[0], "mse": mse[1]}
    if FLAGS.dm_flat_start:
      objects, seconds, chi, mse = run_dm(amplitudes, truths, geometry, None,
                                          "DM (flat start)", mask, init="ones")
      methods["DM (flat start)"] = {"objects": objects, "seconds": seconds,
                                    "scores": score(objects, truths, mask)}
      curves["flat start"] = {"chi": chi, "mse_iterations": mse[0], "mse": mse[1]}
  note = {"argv": sys.argv[1:]}
  if models:
    first = models[0][0]
    start = methods[first]["objects"]
    objects, seconds, chi, mse = run_dm(amplitudes, truths, geometry, start,
                                        f"{first}+DM", mask)
    methods[f"{first}+DM"] = {"objects": objects,
                              "seconds": seconds + methods[first]["seconds"],
                              "scores": score(objects, truths, mask)}
    curves[f"{first} start"] = {"chi": chi, "mse_iterations": mse[0], "mse": mse[1]}
    if "DM" in methods:
      note["speedup"] = methods["DM"]["seconds"] / methods[first]["seconds"]
  # Reference: each object replaced by a constant, its own mean amplitude
  # and phase over the region (the best any featureless guess can score).
  objects = [np.full(t.shape, np.abs(t)[mask].mean() *
                     np.exp(1j * np.angle(t)[mask].mean()), np.complex64)
             for t in truths]
  methods[MEAN_OBJECT] = {"objects": objects, "seconds": 0.0, "panel": False,
                          "scores": score(objects, truths, mask)}
  tables = write_outputs(FLAGS.out_dir, title, info, truths, mask, methods, curves, note)
  print(tables)
  if "speedup" in note:
    print(f"PtychoNet is {note['speedup']:.0f}x faster per scan than "
          f"{FLAGS.dm_iterations} DM iterations")
  print(f"wrote {os.path.join(FLAGS.out_dir, 'report.md')}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
