r"""The best a per-pattern network can do, for each stitching weighting.

  python tools/stitch_ceiling.py --data_dir=tfrecords/small_dense [--scans=20]

A single diffraction pattern says nothing about the object under the dark
part of the probe. Suppose a network were perfect wherever the probe lights
its window (|P|^2 > --lit_fraction of the peak) and predicted the held-out
mean value elsewhere. This stitches those "oracle" patches of the dataset's
test scans with each weighting of `ptychonet_tf.model.layers` and prints the
mean PSNR/SSIM of amplitude and phase (the evaluation convention of
`ptychonet_tf.evaluation.metrics.complex_metrics`, on the illuminated region): the ceiling
that stitching alone puts on PtychoNet's held-out figures.
"""
from absl import flags
import numpy as np

from ptychonet_tf import cli
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("data_dir", None, "Dataset directory (tools/make_tfrecords.py).")
flags.DEFINE_integer("scans", 20, "Test scans to average over.")
flags.DEFINE_float("lit_fraction", 0.01,
                   "Window pixels with |P|^2 above this fraction of the peak "
                   "count as lit.")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  del argv
  if not FLAGS.data_dir:
    raise UserError("--data_dir is required")
  from ptychonet_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import pipeline
  from ptychonet_tf.model import layers
  from ptychonet_tf.physics import forward
  info = pipeline.load_dataset_info(FLAGS.data_dir)
  g = info.geometry
  power = np.abs(g.probe) ** 2
  lit = power > FLAGS.lit_fraction * power.max()
  mask = metrics.illuminated_region(g.layout, g.object_shape, g.probe)
  stitchers = {name: layers.StitchPatches(
      g.layout, g.object_shape, jit_compile=False,
      pixel_weights=layers.stitch_weights(g.probe, name))
               for name in layers.STITCH_WEIGHTINGS}
  sums = {name: {} for name in stitchers}
  count = 0
  for batch in pipeline.make_dataset(FLAGS.data_dir, "test", 1, shuffle=False):
    if count >= FLAGS.scans:
      break
    truth = {}
    for key in ("amplitude", "phase"):
      image = batch["object_" + key].numpy()
      patches = forward.extract(image, g.layout, g.probe_shape).numpy()
      truth[key] = image[0]
      patches[:, :, ~lit] = image[0][mask].mean()
      truth[key + "_patches"] = patches
    true_object = truth["amplitude"] * np.exp(1j * truth["phase"])
    for name, stitch in stitchers.items():
      amp = stitch(truth["amplitude_patches"]).numpy()[0]
      phase = stitch(truth["phase_patches"]).numpy()[0]
      scores = metrics.complex_metrics(amp * np.exp(1j * phase), true_object,
                                       mask)
      for k, v in scores.items():
        sums[name][k] = sums[name].get(k, 0.0) + v
    count += 1
  if not count:
    raise UserError(f"{FLAGS.data_dir} has no test scans")
  print(f"{FLAGS.data_dir}: {count} test scans, {lit.mean():.1%} of each "
        f"{g.probe_shape[0]}x{g.probe_shape[1]} window lit "
        f"(|P|^2 > {FLAGS.lit_fraction:g} of the peak)")
  for name, total in sums.items():
    m = {k: v / count for k, v in total.items()}
    print(f"  {name:8s} stitching of oracle patches: amplitude "
          f"{m['amplitude_psnr']:.2f} dB / SSIM {m['amplitude_ssim']:.3f}, "
          f"phase {m['phase_psnr']:.2f} dB / SSIM {m['phase_ssim']:.3f}")


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
