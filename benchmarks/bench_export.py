r"""How long a SavedModel export and its first load take, and what tracking
only the variables saves.

  python benchmarks/bench_export.py [--refine_steps=40] [--refine_groups=4] \
      [--base_channels=16] [--rounds=2]

Builds an untrained PtychoNet of the small_dense geometry (64x64 zone-plate
probe, Fermat spiral of 100 positions 4.65 px apart) and exports it
`--rounds` times in two ways, alternating, each into a fresh folder:

- "variables only": `export.export_saved_model`, whose module tracks only the
  model's variables and hands the signatures to `tf.saved_model.save`;
- "model and functions tracked": a module that also holds the Keras model and
  the signatures' tf.functions as attributes (what the export did before),
  so that the SavedModel saves their object graph and functions as well.

Prints, per way, the median seconds of the export (tracing and saving), of
`tf.saved_model.load` plus the first serving_default call, and the
SavedModel's size, with the CPU model and flags.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
import tempfile
import time

from absl import app
from absl import logging
from absl import flags
import numpy as np
import tensorflow as tf

from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import network
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.utils import machine

flags.DEFINE_integer("refine_steps", 40, "Refinement steps of the model.")
flags.DEFINE_integer("refine_groups", 4, "Their position groups.")
flags.DEFINE_integer("base_channels", 16, "The network's base channels.")
flags.DEFINE_integer("rounds", 2, "Exports of each kind (the median is shown).")
FLAGS = flags.FLAGS


def _tracked_export(model, probe, path):
  """The export with the model and the tf.functions tracked as attributes."""
  copy = export_lib.float32_copy(model)
  module = export_lib.ServingModule(copy)
  module.model = copy
  functions = export_lib.serving_functions(copy, probe)
  for name, fn in functions.items():
    setattr(module, name, fn)
  tf.saved_model.save(module, path, signatures={
      name: fn.get_concrete_function() for name, fn in functions.items()})
  return path


def _size(path):
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # not tf.saved_model.save's notes
  probe = probe_lib.make_probe((64, 64), "zone_plate", 0.5)
  layout, shape = layouts.layout_from_positions(
      layouts.fermat_spiral(100, 4.65), (64, 64))
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(network.NetworkConfig(
      base_channels=FLAGS.base_channels, refine_steps=FLAGS.refine_steps,
      refine_groups=FLAGS.refine_groups), geometry)
  x = np.random.default_rng(0).random((1, 100, 64, 64)).astype(np.float32)
  model(x)
  ways = {
      "variables only": lambda folder: export_lib.export_saved_model(
          model, probe, folder, 1),
      "model and functions tracked": lambda folder: _tracked_export(
          model, probe, os.path.join(folder, "1")),
  }
  times = {name: {"export": [], "load": []} for name in ways}
  sizes = {}
  root = tempfile.mkdtemp(prefix="bench_export_")
  try:
    for i in range(FLAGS.rounds):
      for name, export in ways.items():
        folder = os.path.join(root, f"{i}-{name.split()[0]}")
        start = time.perf_counter()
        path = export(folder)
        times[name]["export"].append(time.perf_counter() - start)
        start = time.perf_counter()
        loaded = tf.saved_model.load(path)
        loaded.signatures["serving_default"](amplitudes=tf.constant(x))
        times[name]["load"].append(time.perf_counter() - start)
        sizes[name] = _size(path)
        print(f"round {i + 1}/{FLAGS.rounds} {name}: export "
              f"{times[name]['export'][-1]:.1f} s, load + first call "
              f"{times[name]['load'][-1]:.1f} s", flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"\nExport of an untrained small_dense PtychoNet (K="
        f"{FLAGS.refine_steps} in {FLAGS.refine_groups} groups, base channels "
        f"{FLAGS.base_channels}), median of {FLAGS.rounds}; "
        f"{machine.cpu_description()}\n")
  print("| module | export s | load + first call s | SavedModel MB |")
  print("|---|---|---|---|")
  for name in ways:
    print(f"| {name} | {np.median(times[name]['export']):.2f} | "
          f"{np.median(times[name]['load']):.2f} | {sizes[name] / 1e6:.1f} |")


if __name__ == "__main__":
  app.run(main)
