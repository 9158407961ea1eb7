"""Experiment flags shared by the entry points (library code never reads flags).

Every entry point that accepts a ``--flagfile=configs/X.flags`` calls
`define_experiment_flags()` at import, so one flagfile describes a whole
experiment; `export` only needs the run-directory flags
(`define_run_dir_flags()`). The network and training flags are not written
here: `define_setting_flags` derives one from each setting of
`NetworkConfig` and `TrainConfig` (`ptychonet_tf.settings`), and
`config_from_flags` builds those configs from the parsed flags. The other
`*_config()` turn the parsed flags into the frozen config dataclasses the
library takes, and `check_geometry_flags` compares geometry flags given on
the command line with a dataset's.
"""
import math
import os
import sys

from absl import flags

from ptychonet_tf import settings
from ptychonet_tf.data import schema
from ptychonet_tf.evaluation import doses
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training import strategy as strategy_lib
from ptychonet_tf.training.config import TrainConfig
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import family as family_lib
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import objects
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.physics import simulator

FLAGS = flags.FLAGS


# Pseudo-module names under which each group of flags is registered as key
# flags, so that a command's --help lists only the groups it uses
# (`ptychonet_tf.cli.run_command`); every flag of a configs/*.flags file is
# still accepted by every command that reads such a flagfile.
SIMULATION, TRAINING, RUN_DIR = (f"{__name__}:{group}" for group in
                                 ("simulation", "training", "run_dir"))


def _register_group(group, before):
  for name in sorted(set(FLAGS) - before):
    FLAGS.register_key_flag_for_module(group, FLAGS[name])


def define_run_dir_flags():
  """--model_dir and --export_dir (idempotent)."""
  if "model_dir" in FLAGS:
    return
  before = set(FLAGS)
  flags.DEFINE_string("model_dir", None,
                      "Run directory: checkpoints, TensorBoard logs, flags.txt.")
  flags.DEFINE_string("export_dir", None,
                      "SavedModel base directory (TF Serving layout "
                      "<export_dir>/<version>/); default <model_dir>/export.")
  _register_group(RUN_DIR, before)


_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool, str: flags.DEFINE_string}


def define_setting_flags(config_class, command=None):
  """Defines a flag for each setting of `config_class` (`settings.setting`)
  whose `flag` is True, or `command` (a command's own flags); a flag of that
  name already defined (e.g. --seed) is left as it is."""
  for item in settings.settings_of(config_class):
    wanted = item.flag is True if command is None else item.flag == command
    if not wanted or item.name in FLAGS:
      continue
    if item.choices:
      flags.DEFINE_enum(item.name, item.default, list(item.choices),
                        item.help)
    elif item.type is tuple:  # numbers, comma-separated
      flags.DEFINE_list(item.name, [str(v) for v in item.default], item.help)
    else:
      _DEFINE[item.type](item.name, item.default, item.help)


def _flag_value(item):
  """The parsed flag of a setting, as the setting's type."""
  value = FLAGS[item.name].value
  try:
    return settings.coerce(item, value)
  except ValueError:
    raise UserError(f"--{item.name}={','.join(value)} is not a list of "
                    f"numbers") from None


def config_from_flags(config_class, **given):
  """A `config_class` of the parsed flags of its settings, plus `given`
  (fields without a flag of their own)."""
  values = {item.name: _flag_value(item)
            for item in settings.settings_of(config_class)
            if item.flag and item.name not in given and item.name in FLAGS}
  return config_class(**values, **given)


def define_experiment_flags():
  """Every flag a configs/*.flags file may set (idempotent): geometry,
  objects, dataset, data_dir and the run-directory flags, training."""
  if "probe_size" in FLAGS:
    return
  before = set(FLAGS)
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
  flags.DEFINE_string("scan_file", None,
                      "--scan=file: take the layout and object size from this "
                      "dataset's geometry.npz or scan .npz (e.g. a measured "
                      "scan's, from tools/make_tfrecords.py --scans).")
  flags.DEFINE_integer("scan_count", 100, "fermat: number of positions.")
  flags.DEFINE_float("scan_step", 4.65,
                     "fermat: radial step; mesh: grid step; circles: ring spacing (px).")
  flags.DEFINE_integer("mesh_rows", 10, "mesh: rows of the full mesh.")
  flags.DEFINE_integer("mesh_cols", 10, "mesh: columns of the full mesh.")
  flags.DEFINE_integer("mesh_every", 1,
                       "mesh: keep every k-th row and column (20x20 with 4 -> 5x5).")
  flags.DEFINE_integer("circle_rings", 5, "circles: number of rings.")
  flags.DEFINE_integer("scan_margin", 0, "Unscanned border around the scan (px).")
  # A family of geometries (ptychonet_tf/physics/family.py).
  flags.DEFINE_bool("family", False,
                    "Each scan draws its own probe and positions from a "
                    "family (a dataset for a model that serves any scan); "
                    "the probe and scan flags above are the nominal "
                    "geometry, whose object is the largest drawn.")
  flags.DEFINE_list("family_probes", list(family_lib.PROBES),
                    "--family: the probe kinds drawn.")
  flags.DEFINE_list("family_layouts", list(family_lib.LAYOUTS),
                    "--family: the layout kinds drawn.")
  # Objects.
  flags.DEFINE_float("amp_min", 0.5, "Object amplitude minimum.")
  flags.DEFINE_float("amp_max", 1.0, "Object amplitude maximum.")
  flags.DEFINE_float("phase_min", -math.pi / 3, "Object phase minimum (rad).")
  flags.DEFINE_float("phase_max", 0.0, "Object phase maximum (rad).")
  flags.DEFINE_enum("object_mode", "complex", objects.OBJECT_MODES,
                    "complex: amplitude and phase images; phase_only: constant amplitude.")
  flags.DEFINE_float("constant_amplitude", 0.5, "phase_only: the object amplitude.")
  flags.DEFINE_list("photons", ["0"],
                    "Mean photons per pattern for Poisson noise; 0 or inf = "
                    "noise free. Datasets take one value; evaluate takes a "
                    "list (a dose sweep, e.g. 1e3,1e4,1e5,inf).")
  # Dataset.
  flags.DEFINE_string("images", "default",
                      "Image source: 'default' (skimage.data), a folder, a glob, "
                      "tfds:NAME, tfds:/dir, procedural[:N] (synthetic images), "
                      "dead_leaves[:N] (the dead leaves model), "
                      "or several joined by '+' (e.g. default+procedural).")
  flags.DEFINE_integer("num_train", 200, "Training scans.")
  flags.DEFINE_integer("num_test", 20, "Test scans.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split (at most).")
  flags.DEFINE_enum("amplitude_dtype", "float32",
                    list(schema.AMPLITUDE_DTYPES),
                    "Storage dtype of amplitudes in TFRecords.")
  flags.DEFINE_enum("compression", "none", ["none", "gzip"],
                    "TFRecord compression.")
  _register_group(SIMULATION, before)
  before = set(FLAGS)
  # Training.
  flags.DEFINE_string("data_dir", None,
                      "Dataset directory written by tools/make_tfrecords.py.")
  define_setting_flags(NetworkConfig)
  define_setting_flags(TrainConfig)
  flags.DEFINE_enum("distribution", "auto", list(strategy_lib.DISTRIBUTIONS),
                    "auto: multi_worker if TF_CONFIG names several workers, "
                    "mirrored if there are several GPUs, else none.")
  flags.DEFINE_integer("cpu_devices", 1,
                       "Split the CPU into this many logical devices (to try "
                       "--distribution=mirrored without GPUs).")
  flags.DEFINE_bool("eval_only", False,
                    "Evaluate the latest checkpoint of model_dir on the test "
                    "split and exit.")
  _register_group(TRAINING, before)
  define_run_dir_flags()


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
                                   margin=FLAGS.scan_margin,
                                   file=FLAGS.scan_file))


def object_config():
  return objects.ObjectConfig(
      amp_min=FLAGS.amp_min, amp_max=FLAGS.amp_max, phase_min=FLAGS.phase_min,
      phase_max=FLAGS.phase_max, mode=FLAGS.object_mode,
      constant_amplitude=FLAGS.constant_amplitude)


def photon_doses():
  """--photons as floats (`evaluation.doses.parse_doses`; noise free = inf)."""
  return doses.parse_doses(FLAGS.photons)


def simulation_config():
  dose = photon_doses()
  if len(dose) != 1:
    raise UserError(f"--photons={','.join(FLAGS.photons)}: a dataset takes "
                    f"one dose (evaluate takes a list for a dose sweep)")
  family = (family_lib.FamilyConfig(probes=tuple(FLAGS.family_probes),
                                    layouts=tuple(FLAGS.family_layouts))
            if FLAGS.family else None)
  return simulator.SimulationConfig(
      geometry=geometry_config(), object=object_config(),
      photons=0.0 if math.isinf(dose[0]) else dose[0], family=family)


PROBE_FLAGS = ("probe_kind", "probe_diameter", "probe_file")
SCAN_FLAGS = ("scan", "scan_count", "scan_step", "mesh_rows", "mesh_cols",
              "mesh_every", "circle_rings", "scan_margin", "scan_file")


def _given(names):
  return [n for n in names if FLAGS[n].present]


def _flag_text(names):
  return " ".join(FLAGS[n].serialize() for n in names)


def check_geometry_flags(geometry, data_dir):
  """Raises UserError if given geometry flags contradict the dataset's geometry.

  Only flags set on the command line or in a flagfile are checked; the
  dataset's geometry.npz is what the model is trained on.
  """
  source = f"dataset {data_dir} (geometry.npz)"
  h, w = geometry.probe_shape
  if FLAGS["probe_size"].present:
    size = geometry_config().probe.size
    if tuple(size) != geometry.probe_shape:
      raise UserError(f"--probe_size={','.join(FLAGS.probe_size)} conflicts "
                      f"with {source}: its patterns are {h}x{w}; drop the "
                      f"flag or use the dataset's flagfile")
  config = geometry_config()
  scan_flags = _given(SCAN_FLAGS)
  if scan_flags:
    layout, object_shape = config.scan.layout(geometry.probe_shape)
    if (layout.shape != geometry.layout.shape or
        tuple(object_shape) != geometry.object_shape or
        (layout != geometry.layout).any()):
      raise UserError(
          f"{_flag_text(scan_flags)} give {len(layout)} positions on a "
          f"{object_shape[0]}x{object_shape[1]} object, which conflicts with "
          f"{source}: {geometry.num_positions} positions on "
          f"{geometry.object_shape[0]}x{geometry.object_shape[1]} with another "
          f"layout; drop the flags or use the dataset's flagfile")
  probe_flags = _given(PROBE_FLAGS)
  if probe_flags:
    size = tuple(config.probe.size)
    if config.probe.file:
      probe = probe_lib.load_probe(config.probe.file, expected_shape=size)
    else:
      probe = probe_lib.make_probe(size, config.probe.kind,
                                   config.probe.diameter)
    scale = max(float(abs(geometry.probe).max()), 1e-12)
    if (probe.shape != geometry.probe.shape or
        float(abs(probe - geometry.probe).max()) > 1e-4 * scale):
      raise UserError(f"{_flag_text(probe_flags)} describe another probe than "
                      f"{source}; drop the flags or use the dataset's flagfile")


def given_flagfiles(argv=None):
  """The --flagfile values on the command line (argv: default sys.argv)."""
  argv = sys.argv[1:] if argv is None else argv
  files, take_next = [], False
  for arg in argv:
    if take_next:
      files.append(arg)
      take_next = False
    elif arg in ("--flagfile", "-flagfile"):
      take_next = True
    elif arg.startswith(("--flagfile=", "-flagfile=")):
      files.append(arg.split("=", 1)[1])
  return files


def make_dataset_command(data_dir, argv=None):
  """The tools/make_tfrecords.py command that writes `data_dir` with the
  experiment's flagfiles of the current command line."""
  words = ["python", "tools/make_tfrecords.py"]
  words += [f"--flagfile={f}" for f in given_flagfiles(argv)]
  words.append(f"--out_dir={data_dir}")
  return " ".join(words)


def require_dataset(data_dir):
  """Raises UserError naming the exact command that makes a missing dataset."""
  if not data_dir:
    raise UserError("--data_dir is required (a dataset written by "
                    "tools/make_tfrecords.py, e.g. from the experiment's "
                    "flagfile)")
  if not os.path.exists(data_dir):
    raise UserError(f"dataset {data_dir} does not exist; make it with: "
                    f"{make_dataset_command(data_dir)}")
