r"""Simulates one ptychographic scan of an object made from two image files.

  python -m ptychonet_tf.simulate --flagfile=configs/dense.flags \
      --amplitude_image=a.png --phase_image=b.png --out=scan.npz

Writes a scan file (docs/scan_format.md) holding the amplitudes, layout,
probe and the ground-truth object. Images are resized (central crop) to the
object size the scan needs; in phase_only mode --amplitude_image may be left out.
"""
import os

from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.data import images as images_lib
from ptychonet_tf.data import scanfile
from ptychonet_tf.data import writer
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError, report_user_errors
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import objects
from ptychonet_tf.physics import simulator

experiment_flags.define_experiment_flags()
flags.DEFINE_string("amplitude_image", None, "Image file for the object amplitude.")
flags.DEFINE_string("phase_image", None, "Image file for the object phase.")
flags.DEFINE_string("out", None, "Output scan file (.npz).")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  complex_object = FLAGS.object_mode == "complex"
  cli.require_flags("out", "phase_image",
                    *(["amplitude_image"] if complex_object else []))
  config = experiment_flags.simulation_config()
  if os.path.isdir(FLAGS.out):
    raise UserError(f"--out={FLAGS.out} is a directory; expected a .npz file name")
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    raise UserError(f"--out folder {out_dir} does not exist"
                    if not os.path.exists(out_dir) else
                    f"--out={FLAGS.out}: {out_dir} is a file, not a folder")
  writer.check_simulation(config)  # flag ranges, before any allocation
  files.check_writable(FLAGS.out, "--out")
  geometry = geometry_lib.make_geometry(config.geometry)
  writer.check_geometry(geometry)
  phase = objects.random_view(images_lib.read_image_file(FLAGS.phase_image),
                              geometry.object_shape)
  amplitude = None
  if config.object.mode == "complex":
    amplitude = objects.random_view(
        images_lib.read_image_file(FLAGS.amplitude_image), geometry.object_shape)
  obj = objects.make_object(amplitude, phase, config.object)
  amplitudes = simulator.Simulator(geometry, config.photons).amplitudes(
      obj[None], seed=FLAGS.seed)[0]
  scanfile.Scan(amplitudes=amplitudes, layout=geometry.layout,
                probe=geometry.probe, object_shape=geometry.object_shape,
                object=obj).save(FLAGS.out)
  h, w = geometry.probe_shape
  print(f"wrote {FLAGS.out}: {geometry.num_positions} patterns of {h}x{w}, "
        f"object {geometry.object_shape[0]}x{geometry.object_shape[1]}")


def run():
  cli.run_command(main, __name__, (experiment_flags.SIMULATION,))


if __name__ == "__main__":
  run()
