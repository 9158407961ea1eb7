"""Experiment flags shared by the entry points (never read by library code).

Every entry point that accepts a ``--flagfile=configs/X.flags`` imports this
module, so one flagfile describes a whole experiment. `*_config()` turn the
parsed flags into the frozen config dataclasses the library takes.
"""
import math

from absl import flags

from ptychonet_tf.errors import UserError
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import objects
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf import simulation

FLAGS = flags.FLAGS

# Geometry: probe.
flags.DEFINE_list("probe_size", ["64", "64"], "Probe (and pattern) size h,w in pixels.")
flags.DEFINE_enum("probe_kind", "zone_plate", probe_lib.PROBE_KINDS,
                  "Simulated probe kind.")
flags.DEFINE_float("probe_diameter", 0.5,
                   "Illuminated disk diameter as a fraction of the probe window.")
flags.DEFINE_string("probe_file", None,
                    "Load the probe from this .npy/.npz file instead of simulating it.")
# Geometry: scan.
flags.DEFINE_enum("scan", "fermat", geometry_lib.SCAN_PATTERNS, "Scan pattern.")
flags.DEFINE_integer("scan_count", 100, "fermat: number of positions.")
flags.DEFINE_float("scan_step", 4.65,
                   "fermat: radial step; mesh: grid step; circles: ring spacing (px).")
flags.DEFINE_integer("mesh_rows", 10, "mesh: rows of the full mesh.")
flags.DEFINE_integer("mesh_cols", 10, "mesh: columns of the full mesh.")
flags.DEFINE_integer("mesh_every", 1,
                     "mesh: keep every k-th row and column (20x20 with 4 -> 5x5).")
flags.DEFINE_integer("circle_rings", 5, "circles: number of rings.")
flags.DEFINE_integer("scan_margin", 0, "Unscanned border around the scan (px).")
# Objects.
flags.DEFINE_float("amp_min", 0.5, "Object amplitude minimum.")
flags.DEFINE_float("amp_max", 1.0, "Object amplitude maximum.")
flags.DEFINE_float("phase_min", -math.pi / 3, "Object phase minimum (rad).")
flags.DEFINE_float("phase_max", 0.0, "Object phase maximum (rad).")
flags.DEFINE_enum("object_mode", "complex", objects.OBJECT_MODES,
                  "complex: amplitude and phase images; phase_only: constant amplitude.")
flags.DEFINE_float("constant_amplitude", 0.5, "phase_only: the object amplitude.")
flags.DEFINE_float("photons", 0.0,
                   "Mean photons per pattern for Poisson noise; 0 = noise free.")
# Dataset.
flags.DEFINE_string("images", "default",
                    "Image source: 'default' (skimage.data), a folder, a glob, or tfds:NAME.")
flags.DEFINE_integer("num_train", 200, "Training scans.")
flags.DEFINE_integer("num_test", 20, "Test scans.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split (at most).")
flags.DEFINE_enum("amplitude_dtype", "float32", ["float32", "float16"],
                  "Storage dtype of amplitudes in TFRecords.")
flags.DEFINE_enum("compression", "none", ["none", "gzip"],
                  "TFRecord compression.")


def _probe_size():
  try:
    size = tuple(int(s) for s in FLAGS.probe_size)
  except ValueError:
    size = ()
  if len(size) == 1:
    size = size * 2
  if len(size) != 2 or min(size) < 4:
    raise UserError(f"--probe_size={','.join(FLAGS.probe_size)} must be one or "
                    f"two integers >= 4 (h,w)")
  return size


def geometry_config():
  return geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=_probe_size(), kind=FLAGS.probe_kind,
                                     diameter=FLAGS.probe_diameter,
                                     file=FLAGS.probe_file),
      scan=geometry_lib.ScanConfig(pattern=FLAGS.scan, count=FLAGS.scan_count,
                                   step=FLAGS.scan_step, rows=FLAGS.mesh_rows,
                                   cols=FLAGS.mesh_cols, every=FLAGS.mesh_every,
                                   rings=FLAGS.circle_rings,
                                   margin=FLAGS.scan_margin))


def object_config():
  return objects.ObjectConfig(
      amp_min=FLAGS.amp_min, amp_max=FLAGS.amp_max, phase_min=FLAGS.phase_min,
      phase_max=FLAGS.phase_max, mode=FLAGS.object_mode,
      constant_amplitude=FLAGS.constant_amplitude)


def simulation_config():
  if FLAGS.photons < 0:
    raise UserError(f"--photons={FLAGS.photons} must be >= 0 (0 = noise free)")
  return simulation.SimulationConfig(geometry=geometry_config(),
                                     object=object_config(),
                                     photons=FLAGS.photons)
