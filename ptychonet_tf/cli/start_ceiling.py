r"""How good a start must DM get? DM from flat and from blurred truths.

  python tools/start_ceiling.py --data_dir=tfrecords/small_sparse_photos \
      [--scans=8] [--iterations=300,1000,3000] [--blur=2,4,8] \
      [--blur_iterations=300] [--photons=1e4 --lsqml_iterations=200]

A learned model that starts an iterative solver is worth what its start is
worth. This measures that on a dataset's test scans (known probe): DM from a
flat object (amplitude 1, phase 0) for each of --iterations, and DM for
--blur_iterations from the true object blurred by a Gaussian of each --blur
sigma (pixels; real and imaginary parts blurred), a stand-in for a start
that has the object's coarse features right and none of its fine ones. It
prints mean PSNR / SSIM of amplitude and phase (the evaluation convention of
`ptychonet_tf.evaluation.metrics.complex_metrics`, on the illuminated region)
of each start and each result: e.g. on sparse scans whether DM converges at
all, how far, and how close to the truth a start must be for DM to reach a
target.

With --photons=D the test scans are first redrawn with Poisson noise at D
photons per pattern (`evaluation.doses.noisy_scans`, the draw `evaluate
--photons` makes), every DM run sees the noisy data, and two more kinds of
rows ask what a linear filter can do there: LSQML with the Poisson noise
model (object_reg 1, --lsqml_iterations) from a flat start, and its result
blurred by each --blur sigma. The truth-blurred rows stay noise free: how
sharp an estimate must be for a target, whatever the noise.
"""
from absl import flags
import numpy as np

from ptychonet_tf import cli
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "Dataset directory (tools/make_tfrecords.py).")
flags.DEFINE_integer("scans", 8, "Test scans (the first ones), run as one batch.")
flags.DEFINE_list("iterations", ["300", "1000", "3000"],
                  "DM iterations from the flat start.")
flags.DEFINE_list("blur", ["2", "4", "8"],
                  "Gaussian sigmas (pixels) of the blurred-truth starts.")
flags.DEFINE_integer("blur_iterations", 300,
                     "DM iterations from each blurred-truth start.")
flags.DEFINE_string("photons", None,
                    "Poisson noise at this many photons per pattern on the "
                    "test scans first (adds the LSQML rows; see the doc).")
flags.DEFINE_integer("lsqml_iterations", 200,
                     "With --photons: LSQML (Poisson) iterations.")
FLAGS = flags.FLAGS


def _numbers(values, name, kind):
  try:
    numbers = [kind(v) for v in values]
  except ValueError as e:
    raise UserError(f"--{name}={','.join(values)} is not a list of numbers") from e
  if any(n <= 0 for n in numbers):
    raise UserError(f"--{name}={','.join(values)} must all be > 0")
  return numbers


def _line(label, scores):
  mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
  print(f"  {label:44s} amplitude {mean['amplitude_psnr']:6.2f} dB / SSIM "
        f"{mean['amplitude_ssim']:.3f}, phase {mean['phase_psnr']:6.2f} dB / "
        f"SSIM {mean['phase_ssim']:.3f}", flush=True)


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("data_dir")
  iterations = _numbers(FLAGS.iterations, "iterations", int)
  sigmas = _numbers(FLAGS.blur, "blur", float)
  if (FLAGS.scans < 1 or FLAGS.blur_iterations < 1 or
      FLAGS.lsqml_iterations < 1):
    raise UserError("--scans, --blur_iterations and --lsqml_iterations must "
                    "be >= 1")
  from ptychonet_tf.evaluation import doses  # pylint: disable=g-import-not-at-top
  dose = None if FLAGS.photons is None else doses.parse_doses(
      [FLAGS.photons])[0]
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  from ptychonet_tf import reconstructors  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.baselines import dm  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import comparison  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  amplitudes, truths, info = comparison.read_test_split(FLAGS.data_dir,
                                                        FLAGS.scans)
  g = info.geometry
  mask = metrics.illuminated_region(g.layout, g.object_shape, g.probe)

  def scores(objects):
    return [metrics.complex_metrics(o, t, mask)
            for o, t in zip(objects, truths)]

  if dose is not None:
    amplitudes = doses.noisy_scans(amplitudes, dose)

  def blur(objects, sigma):
    return np.stack([ndimage.gaussian_filter(o.real, sigma) +
                     1j * ndimage.gaussian_filter(o.imag, sigma)
                     for o in objects]).astype(np.complex64)

  def run_dm(count, start=None):
    config = dm.DMConfig(iterations=count, init="ones", progress=False)
    return reconstructors.reconstruct("dm", amplitudes, g.probe, g.layout,
                                      g.object_shape, config,
                                      initial_object=start)

  print(f"{FLAGS.data_dir}: {len(truths)} test scans, {g.num_positions} "
        f"positions, probe {g.probe_shape[0]}x{g.probe_shape[1]}, object "
        f"{g.object_shape[0]}x{g.object_shape[1]}"
        + ("" if dose is None else
           f"; {doses.label(dose)} photons per pattern"))
  _line("flat start", scores(np.ones_like(truths)))
  for count in iterations:
    result = run_dm(count)
    _line(f"DM-{count} from flat "
          f"({result.seconds_per_iteration * 1e3:.1f} ms/it)",
          scores(result.object))
  if dose is not None:
    from ptychonet_tf.baselines import lsqml  # pylint: disable=g-import-not-at-top
    fitted = reconstructors.reconstruct(
        "lsqml", amplitudes, g.probe, g.layout, g.object_shape,
        lsqml.LSQMLConfig(iterations=FLAGS.lsqml_iterations,
                          noise_model="poisson", object_reg=1.0,
                          progress=False)).object
    name = f"LSQML-{FLAGS.lsqml_iterations} (Poisson)"
    _line(name, scores(fitted))
    for sigma in sigmas:
      _line(f"{name} blurred, sigma {sigma:g} px",
            scores(blur(fitted, sigma)))
  for sigma in sigmas:
    blurred = blur(truths, sigma)
    _line(f"truth blurred, sigma {sigma:g} px", scores(blurred))
    _line(f"... then DM-{FLAGS.blur_iterations}",
          scores(run_dm(FLAGS.blur_iterations, blurred).object))


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
