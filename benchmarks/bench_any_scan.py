r"""A trained model on scans of layouts it was not trained on (`any_scan`).

PtychoNet's per-pattern network does not see the positions: only the
stitching and the physics-unrolled refinement do, and
`PtychoNet.reconstruct_scan` (the SavedModel's `any_scan` signature) takes
both from the scan. This benchmark measures what that is worth: the held-out
objects of a dataset (its test split, never trained on) are cropped to the
object of each new layout, simulated there with the model's own probe (noise
free) and reconstructed by the model in one call per scan (batch 1), next to
DM-300 and DM at the model's time, both from a flat start with the known
probe. The first row is the model on its own training geometry.
`--scan_probe=KIND:DIAMETER` simulates every scan with another probe, which
the model is given (how far its network, trained on one probe, carries).

  python benchmarks/bench_any_scan.py --model_dir=runs/small_dense \
      --data_dir=tfrecords/small_dense_photos --scans=8

With `--probe_gain`, `--probe_defocus` or `--probe_magnify` it measures the
probe refinement instead (signature `any_scan_refine_probe`): the model is
given a wrong probe, the true one magnified by probe_magnify about its
centre, times a quadratic phase of probe_defocus radians at the probe's RMS
radius, at probe_gain times the true probe's amplitude; rows: the true
probe, the wrong one, the wrong one refined (`--probe_passes` passes of
the refinement steps); and the share of the PSNR lost to the wrong probe
that the refinement recovers, with the phase offset removed and after
`metrics.register_blind` (a shift, a linear phase ramp and an amplitude
scale removed: what blind ptychography cannot determine; LSQML and DM with
probe refinement, `--lsqml_iterations`, `--blind_dm`, are scored both ways
too):

  python benchmarks/bench_any_scan.py --model_dir=runs/small_dense \
      --data_dir=tfrecords/small_dense_photos --probe_defocus=0.5 \
      --probe_gain=1.2 --layouts= --lsqml_iterations=300 --blind_dm

`--family_data` scores a family dataset's test scans instead (make_tfrecords
--family: each scan with its own probe and positions; with a seed and
images other than the training's, probes and layouts drawn fresh and
objects never seen), the model given each scan's probe and positions, next
to `--other_models` (e.g. one trained on one scan's exact geometry, which
`--save_geometries` writes out) and DM-N / DM at the model's time:

  python benchmarks/bench_any_scan.py --model_dir=runs/small_any \
      --family_data=tfrecords/small_any_photos --scans=8

`--passes=P` runs the refinement steps P times on every any_scan row
(`reconstruct_scan(passes=P)`, the SavedModel's `any_scan_passes`), each
pass from the last one's object; `--photons` adds Poisson noise to every
scan it simulates, as `evaluate --photons` does (the serving_default row
then is the model's one pass on noisy data of its geometry):

  python benchmarks/bench_any_scan.py --model_dir=runs/small_any \
      --family_data=tfrecords/small_any_photos --scans=8 --passes=2

Layouts (`--layouts`, each `kind:arg:arg...` in pixels): fermat:COUNT:STEP,
mesh:ROWS:COLS:STEP, circles:RINGS:STEP; `--jitter` adds uniform position
noise of that many pixels (the same draw for every scan of a layout).
Prints PSNR / SSIM of amplitude and phase (phase offset removed) on the
illuminated region, and seconds per scan, with the CPU model and flags.
"""
import os
import time

from absl import app
from absl import flags
import numpy as np
from scipy import ndimage
import tensorflow as tf

from ptychonet_tf import reconstructors
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import doses
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import inference
from ptychonet_tf.model import network
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.training import run_dir
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("model_dir", None, "A run directory (its latest "
                    "checkpoint).")
flags.DEFINE_string("data_dir", None, "A dataset whose test split holds the "
                    "objects (e.g. tfrecords/small_dense_photos).")
flags.DEFINE_integer("scans", 8, "Test scans (objects) per layout.")
flags.DEFINE_list("layouts", ["fermat:70:5.2", "fermat:140:3.6",
                              "mesh:8:8:12", "mesh:6:6:16", "circles:4:10.5"],
                  "The new layouts, kind:arg:arg (see the module doc); each "
                  "must fit the dataset's objects.")
flags.DEFINE_float("jitter", 1.0, "Uniform position noise (+- px).")
flags.DEFINE_integer("dm_iterations", 300, "DM iterations of the DM row.")
flags.DEFINE_bool("dm", True, "Run the DM rows.")
flags.DEFINE_integer("seed", 0, "Seed of the jitter.")
flags.DEFINE_float("probe_gain", 1.0, "Probe rows: the wrong probe's "
                   "amplitude relative to the true one (1.2: 20% off).")
flags.DEFINE_float("probe_magnify", 1.0, "Probe rows: the wrong probe's "
                   "magnification about its centre (1.2: 20% larger).")
flags.DEFINE_float("probe_defocus", 0.0, "Probe rows: the wrong probe's "
                   "quadratic phase (rad) at the probe's RMS radius.")
flags.DEFINE_integer("probe_passes", network.PROBE_PASSES, "Probe rows: "
                     "passes of the refinement steps with probe refinement "
                     "(reconstruct_scan's passes with refine_probe).")
flags.DEFINE_float("photons", 0.0, "Poisson noise of this many photons per "
                   "pattern on every scan the benchmark simulates (the "
                   "training geometry's as `evaluate --photons` draws it; "
                   "0: noise free; not in family mode, whose scans are "
                   "scored as written).")
flags.DEFINE_integer("passes", 1, "Passes of the refinement steps on every "
                     "any_scan row (reconstruct_scan's passes; the "
                     "SavedModel's any_scan_passes signature).")
flags.DEFINE_string("scan_probe", "", "KIND:DIAMETER (zone_plate or "
                    "pinhole, diameter as a fraction of the window): the "
                    "scans are simulated with this probe and the model is "
                    "given it (empty: the model's probe).")
flags.DEFINE_integer("lsqml_iterations", 0, "Probe rows: also LSQML with "
                     "this many iterations from a flat start, with the true "
                     "probe and with the wrong one refined (0: none).")
flags.DEFINE_bool("blind_dm", False, "Probe rows: also DM (--dm_iterations) "
                  "from a flat start with the wrong probe refined.")
flags.DEFINE_string("family_data", None, "A family dataset (make_tfrecords "
                    "--family) whose test scans, each with its own probe "
                    "and positions, are scored instead of --data_dir's "
                    "objects in new layouts (a dataset of one geometry: "
                    "its scans, given that geometry).")
flags.DEFINE_list("other_models", [], "Family mode: more run directories "
                  "scored on the same scans (their any_scan).")
flags.DEFINE_list("family_scans", [], "Family mode: indices of the test "
                  "scans to score (default: the first --scans).")
flags.DEFINE_string("save_geometries", None, "Family mode: write each "
                    "scored scan's probe, layout and object_shape to "
                    "DIR/scan_K.npz (for make_tfrecords --scan=file "
                    "--scan_file=DIR/scan_K.npz --probe_file=DIR/scan_K.npz).")
flags.DEFINE_float("momentum_scale", 1.0, "Diagnostic: multiply the "
                   "refinement's learned momenta by this (0: none).")
flags.DEFINE_bool("line_search", None, "Diagnostic: switch the "
                  "refinement's step-length fit (refine_line_search) on or "
                  "off for a trained model.")
flags.DEFINE_bool("restart", None, "Diagnostic: switch the refinement's "
                  "momentum restart (refine_restart) on or off for a trained "
                  "model.")
FLAGS = flags.FLAGS

KINDS = {"fermat": (layouts.fermat_spiral, (int, float)),
         "mesh": (layouts.mesh, (int, int, float)),
         "circles": (layouts.concentric_circles, (int, float))}


def positions_of(spec, rng):
  """(y, x) positions of a layout spec, jittered by --jitter."""
  kind, *args = spec.split(":")
  if kind not in KINDS or len(args) != len(KINDS[kind][1]):
    raise UserError(f"--layouts entry {spec!r} is not one of fermat:COUNT:"
                    f"STEP, mesh:ROWS:COLS:STEP, circles:RINGS:STEP")
  make, types = KINDS[kind]
  try:
    values = [t(a) for t, a in zip(types, args)]
  except ValueError:
    raise UserError(f"--layouts entry {spec!r} holds a value that is not a "
                    f"number") from None
  positions = np.asarray(make(*values), np.float64)
  return positions + rng.uniform(-FLAGS.jitter, FLAGS.jitter, positions.shape)


def noisy(amplitudes):
  """The scans [S, N, h, w] with Poisson noise at --photons (as `evaluate
  --photons` draws it), or as they are."""
  if not FLAGS.photons:
    return amplitudes
  return doses.noisy_scans(amplitudes, FLAGS.photons, FLAGS.seed)


def wrong_probe(probe, magnify, defocus, gain):
  """The probe magnified by `magnify` about its centre, times a quadratic
  phase of `defocus` rad at its RMS radius (`probe.aberrate`), at `gain`
  times the true probe's amplitude (its power renormalised first)."""
  h, w = probe.shape
  centre = np.array([(h - 1) / 2, (w - 1) / 2])
  matrix = np.eye(2) / magnify
  offset = centre - matrix @ centre
  parts = [ndimage.affine_transform(part, matrix, offset, order=1)
           for part in (probe.real, probe.imag)]
  wrong = probe_lib.aberrate(parts[0] + 1j * parts[1], defocus)
  power = np.abs(probe) ** 2
  wrong *= gain * np.sqrt(power.sum() / np.sum(np.abs(wrong) ** 2))
  return wrong.astype(np.complex64)


def scores(objects, truths, mask, blind=False):
  """Mean metrics of the objects; blind: each first aligned with
  `metrics.register_blind` (shift, linear phase ramp, amplitude scale)."""
  if blind:
    objects = [metrics.register_blind(o, t, mask)[0]
               for o, t in zip(objects, truths)]
  rows = [metrics.complex_metrics(o, t, mask) for o, t in zip(objects, truths)]
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# Family mode: every row's scores and seconds by method name, for the means.
ROWS = {}


def line(name, objects, truths, mask, seconds, key=None, blind=False):
  """Prints a row of mean scores; family mode's means gather rows by `key`
  (default: the name). blind: also a row of the scores after
  `metrics.register_blind`; returns (scores, blind scores or None)."""
  s = scores(objects, truths, mask)
  print_row(name, s, seconds)
  ROWS.setdefault(key or name, []).append(dict(s, seconds=seconds))
  if not blind:
    return s
  aligned = scores(objects, truths, mask, blind=True)
  print_row("  the same, blind-aligned", aligned, seconds)
  return s, aligned


def print_row(name, s, seconds):
  print(f"  {name:34s} {s['amplitude_psnr']:7.2f} {s['amplitude_ssim']:6.3f} "
        f"{s['phase_psnr']:7.2f} {s['phase_ssim']:6.3f} {seconds:9.3f}",
        flush=True)


def dm_rows(amplitudes, probe, layout, shape, truths, mask, model_seconds):
  """DM-N and DM at the model's time (its iteration count from DM-N's)."""
  inputs = (amplitudes, probe, layout, shape)
  full = FLAGS.dm_iterations
  tick = time.perf_counter()
  out = reconstructors.reconstruct(
      "dm", *inputs, reconstructors.configure("dm", iterations=full,
                                              progress=False)).object
  seconds = (time.perf_counter() - tick) / len(truths)
  line(f"DM-{full}", out, truths, mask, seconds)
  equal = max(1, int(round(full * model_seconds / seconds)))
  tick = time.perf_counter()
  out = reconstructors.reconstruct(
      "dm", *inputs, reconstructors.configure("dm", iterations=equal,
                                              progress=False)).object
  line(f"DM-{equal} (the model's time)", out, truths, mask,
       (time.perf_counter() - tick) / len(truths), key="DM at the model's time")


def scan_function(model):
  """model.reconstruct_scan as a tf.function of (amplitudes [1, N, h, w],
  positions [1, N, 2], probe complex64 [h, w]) -> complex64 numpy [H, W],
  traced once for every size."""
  h, w = model.probe_shape

  @tf.function(input_signature=[tf.TensorSpec([1, None, h, w], tf.float32),
                                tf.TensorSpec([1, None, 2], tf.float32),
                                tf.TensorSpec([h, w], tf.complex64)])
  def any_scan(amplitudes, positions, probe):
    out = model.reconstruct_scan(amplitudes, positions, probe,
                                 passes=FLAGS.passes)
    return out["amplitude"], out["phase"]

  def run(amplitudes, positions, probe):
    amplitude, phase = any_scan(amplitudes[None], positions[None], probe)
    return amplitude.numpy()[0] * np.exp(1j * phase.numpy()[0])

  return run


def family_rows(model):
  """Family mode (--family_data): each test scan in its own geometry."""
  scans = comparison.read_scans(FLAGS.family_data)
  try:
    chosen = ([int(k) for k in FLAGS.family_scans] or
              list(range(min(FLAGS.scans, len(scans)))))
  except ValueError:
    raise UserError(f"--family_scans={','.join(FLAGS.family_scans)} must "
                    f"be scan indices") from None
  if any(not 0 <= k < len(scans) for k in chosen):
    raise UserError(f"--family_scans: {FLAGS.family_data} has "
                    f"{len(scans)} test scans")
  models = [(FLAGS.model_dir, model)] + [
      (path, run_dir.load_trained_model(path)[0])
      for path in FLAGS.other_models]
  functions = [(path, scan_function(m)) for path, m in models]
  print(f"family mode: {len(chosen)} test scans of {FLAGS.family_data}, "
        f"each with its own probe and positions (noise as written), "
        f"{metrics.region_name()}, phase offset removed")
  print(f"  {'method':34s} {'amp dB':>7s} {'SSIM':>6s} {'pha dB':>7s} "
        f"{'SSIM':>6s} {'s / scan':>9s}")
  h, w = model.probe_shape
  if FLAGS.save_geometries:
    os.makedirs(FLAGS.save_geometries, exist_ok=True)
  for k in chosen:
    amplitudes, positions, probe, truth = scans[k][:4]
    layout, shape = layouts.layout_from_positions(positions, (h, w))
    mask = metrics.illuminated_region(layout, shape, probe)
    y, x, rms = probe_lib.rms_frame(probe)
    if scans[k].description:
      print(f"scan {k} (index {scans[k].index} of the split): "
            f"{scans[k].description}")
    print(f"scan {k}: {len(layout)} positions, object {shape[0]}x"
          f"{shape[1]}, overlap {layouts.overlap_fraction(layout):.2f}, "
          f"probe RMS radius {rms:.1f} px (relative difference "
          f"{inference.probe_difference(probe, model.probe_real + 1j * model.probe_imag):.2f} "
          f"to the nominal)")
    if FLAGS.save_geometries:
      geometry_lib.Geometry(probe=probe, layout=layout,
                            object_shape=shape).save(os.path.join(
                                FLAGS.save_geometries, f"scan_{k}.npz"))
    model_seconds = None
    for path, fn in functions:
      fn(amplitudes, positions, probe)  # traced outside the timing
      tick = time.perf_counter()
      estimate = fn(amplitudes, positions, probe)
      seconds = time.perf_counter() - tick
      model_seconds = model_seconds or seconds
      line(f"{path}, any_scan", estimate[None], truth[None], mask, seconds)
    if FLAGS.dm:
      dm_rows(amplitudes[None], probe, layout, shape, truth[None], mask,
              model_seconds)
  print(f"mean over {len(chosen)} scans:")
  for name, rows in ROWS.items():
    print_row(name, {k: float(np.mean([r[k] for r in rows]))
                     for k in rows[0]},
              float(np.mean([r["seconds"] for r in rows])))


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not FLAGS.model_dir or not (FLAGS.data_dir or FLAGS.family_data):
    raise UserError("--model_dir and --data_dir (or --family_data) are "
                    "required")
  if FLAGS.passes < 1 or FLAGS.probe_passes < 1:
    raise UserError(f"--passes={FLAGS.passes} and --probe_passes="
                    f"{FLAGS.probe_passes} must be >= 1")
  model, geometry, step = run_dir.load_trained_model(FLAGS.model_dir)
  if model.refinement is not None and FLAGS.momentum_scale != 1:
    model.refinement.momentum.assign(model.refinement.momentum *
                                     FLAGS.momentum_scale)
  if model.refinement is not None and FLAGS.line_search is not None:
    model.refinement.line_search = FLAGS.line_search
  if model.refinement is not None and FLAGS.restart is not None:
    model.refinement.restart = FLAGS.restart
  if FLAGS.family_data:
    if FLAGS.photons:
      raise UserError("--photons does not apply to --family_data (its scans "
                      "are scored with the noise they were written with)")
    print(machine.cpu_description())
    print(f"model {FLAGS.model_dir} (step {step}, {model.refine_steps} "
          f"refinement steps in {model.refine_groups} groups, "
          f"{FLAGS.passes} pass(es) on any_scan)")
    family_rows(model)
    return
  amplitudes, truths, _, _ = comparison.read_scored_split(
      FLAGS.data_dir, FLAGS.scans, photons=FLAGS.photons, seed=FLAGS.seed)
  h, w = geometry.probe_shape
  probe = geometry.probe
  if FLAGS.scan_probe:
    # Every scan simulated again with another probe, which the model is
    # given (its network has seen patterns of its own probe only).
    kind, _, diameter = FLAGS.scan_probe.partition(":")
    try:
      probe = probe_lib.make_probe((h, w), kind, float(diameter or 0.5))
    except ValueError:
      raise UserError(f"--scan_probe={FLAGS.scan_probe} is not KIND:DIAMETER "
                      f"(e.g. pinhole:0.5)") from None
    amplitudes = noisy(forward.diffraction_amplitudes(
        tf.constant(truths, tf.complex64), probe, geometry.layout).numpy())
  print(machine.cpu_description())
  noise = (f"{FLAGS.photons:g} photons per pattern" if FLAGS.photons else
           "noise free")
  print(f"model {FLAGS.model_dir} (step {step}, {model.refine_steps} "
        f"refinement steps in {model.refine_groups} groups, "
        f"{FLAGS.passes} pass(es) on any_scan, momenta x "
        f"{FLAGS.momentum_scale:g}); objects: "
        f"{len(truths)} test scans of {FLAGS.data_dir}; {noise}, probe "
        f"{h}x{w} {FLAGS.scan_probe or 'of the model'} (relative difference "
        f"{inference.probe_difference(probe, geometry.probe):.3f} to the "
        f"model's); {metrics.region_name()}, phase offset removed")
  print(f"  {'method':34s} {'amp dB':>7s} {'SSIM':>6s} {'pha dB':>7s} "
        f"{'SSIM':>6s} {'s / scan':>9s}")

  signature = [tf.TensorSpec([1, None, h, w], tf.float32),
               tf.TensorSpec([1, None, 2], tf.float32),
               tf.TensorSpec([h, w], tf.complex64)]

  @tf.function(input_signature=signature)
  def any_scan(amplitudes, positions, given):
    out = model.reconstruct_scan(amplitudes, positions, given,
                                 passes=FLAGS.passes)
    return out["amplitude"], out["phase"]

  @tf.function(input_signature=signature)
  def refine_probe(amplitudes, positions, given):
    out = model.reconstruct_scan(amplitudes, positions, given,
                                 refine_probe=True,
                                 passes=FLAGS.probe_passes)
    return out["amplitude"], out["phase"]

  def learned(amplitudes, layout, given=probe, fn=any_scan):
    corners = layout[None, :, [0, 2]].astype(np.float32)
    fn(amplitudes[:1], corners, given)  # traced once, outside the timing
    tick = time.perf_counter()
    objects = []
    for scan in amplitudes:
      amplitude, phase = fn(scan[None], corners, given)
      objects.append(amplitude.numpy()[0] * np.exp(1j * phase.numpy()[0]))
    return np.stack(objects), (time.perf_counter() - tick) / len(amplitudes)

  def probe_rows(amplitudes, layout, crops, mask):
    wrong = wrong_probe(probe, FLAGS.probe_magnify, FLAGS.probe_defocus,
                        FLAGS.probe_gain)
    print(f"  wrong probe: x{FLAGS.probe_gain:g} in amplitude, "
          f"x{FLAGS.probe_magnify:g} in size, {FLAGS.probe_defocus:g} rad "
          f"defocus at the RMS radius; relative "
          f"difference {np.linalg.norm(wrong - probe) / np.linalg.norm(probe):.3f}")
    rows = []
    for name, given, fn in (("any_scan, true probe", probe, any_scan),
                            ("any_scan, wrong probe", wrong, any_scan),
                            (f"any_scan_refine_probe, wrong, "
                             f"{FLAGS.probe_passes} passes", wrong,
                             refine_probe)):
      objects, seconds = learned(amplitudes, layout, given, fn)
      rows.append(line(name, objects, crops, mask, seconds, blind=True))
    solvers = []  # (method, iterations, row name, probe given, refine)
    if FLAGS.lsqml_iterations:
      solvers += [("lsqml", FLAGS.lsqml_iterations, "true probe", probe,
                   False),
                  ("lsqml", FLAGS.lsqml_iterations, "wrong probe refined",
                   wrong, True)]
    if FLAGS.blind_dm:
      solvers.append(("dm", FLAGS.dm_iterations, "wrong probe refined",
                      wrong, True))
    for method, iterations, name, given, refine in solvers:
      tick = time.perf_counter()
      out = reconstructors.reconstruct(
          method, amplitudes, given, layout, crops.shape[1:],
          reconstructors.configure(method, refine_probe=refine,
                                   iterations=iterations,
                                   progress=False)).object
      line(f"{method.upper()}-{iterations}, {name}", out, crops, mask,
           (time.perf_counter() - tick) / len(crops), blind=True)
    for way, index in (("phase offset removed", 0),
                       ("blind-aligned: shift, ramp and scale removed", 1)):
      print(f"  {way}:")
      true, given, refined = (row[index] for row in rows)
      for key in ("amplitude_psnr", "phase_psnr"):
        lost = true[key] - given[key]
        print(f"    {key}: lost {lost:.2f} dB to the wrong probe, recovered "
              f"{refined[key] - given[key]:.2f} dB "
              f"({100 * (refined[key] - given[key]) / lost:.0f}%)")

  mask = metrics.illuminated_region(geometry.layout, geometry.object_shape,
                                    probe)
  print(f"training geometry: {geometry.num_positions} positions, object "
        f"{geometry.object_shape[0]}x{geometry.object_shape[1]}")
  probe_mode = (FLAGS.probe_gain != 1 or FLAGS.probe_magnify != 1 or
                FLAGS.probe_defocus != 0)
  if probe_mode:
    # The training geometry's scans, simulated again with the true probe.
    probe_rows(amplitudes, geometry.layout, truths, mask)
  if not (probe_mode or FLAGS.scan_probe):
    model(amplitudes[:1])
    tick = time.perf_counter()
    fixed = np.concatenate([
        (lambda o: o["amplitude"].numpy() * np.exp(1j * o["phase"].numpy()))(
            model(scan[None])) for scan in amplitudes])
    line("model, serving_default", fixed, truths, mask,
         (time.perf_counter() - tick) / len(truths))
  if not probe_mode:
    objects, seconds = learned(amplitudes, geometry.layout)
    line("model, any_scan", objects, truths, mask, seconds)
  rng = np.random.default_rng(FLAGS.seed)
  for spec in FLAGS.layouts:
    layout, shape = layouts.layout_from_positions(positions_of(spec, rng),
                                                  (h, w))
    if shape[0] > truths.shape[1] or shape[1] > truths.shape[2]:
      raise UserError(f"layout {spec} spans {shape[0]}x{shape[1]} pixels; "
                      f"the objects are {truths.shape[1]}x{truths.shape[2]}")
    crops = truths[:, :shape[0], :shape[1]]
    scans = noisy(forward.diffraction_amplitudes(
        tf.constant(crops, tf.complex64), probe, layout).numpy())
    mask = metrics.illuminated_region(layout, shape, probe)
    print(f"{spec} (jitter {FLAGS.jitter:g} px): {len(layout)} positions, "
          f"object {shape[0]}x{shape[1]}, overlap "
          f"{layouts.overlap_fraction(layout):.2f}")
    if probe_mode:
      probe_rows(scans, layout, crops, mask)
      continue
    objects, seconds = learned(scans, layout)
    line("model, any_scan", objects, crops, mask, seconds)
    if FLAGS.dm:
      dm_rows(scans, probe, layout, shape, crops, mask, seconds)


if __name__ == "__main__":
  app.run(main)
