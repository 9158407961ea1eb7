r"""Simulation and input-pipeline throughput for the small and paper geometries.

  python benchmarks/bench_data.py [--configs=small_dense,dense] [--scans=16]

Prints, per config: forward-model throughput (patterns/s, TF, batch of 4
objects, one process), object synthesis (objects/s, one process), end-to-end
dataset writing (scans/s with --workers processes, including their start-up of
several seconds: object synthesis + forward model + serialisation), and
pipeline read throughput (scans/s and MB/s of parsed float32 tensors, batch 4).
"""
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np

from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.data import images as images_lib
from ptychonet_tf.data import pipeline
from ptychonet_tf.data import writer
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import simulator

experiment_flags.define_experiment_flags()
flags.DEFINE_list("configs", ["small_dense", "dense"], "Config names under configs/.")
flags.DEFINE_integer("scans", 32, "Scans to simulate and read per config.")
flags.DEFINE_integer("workers", None, "Writer processes (default: all cores).")
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_for(name):
  """Parses configs/<name>.flags into the experiment flags (fresh defaults).

  Resets every flag (the benchmark's own options are read before this).
  """
  path = os.path.join(REPO, "configs", f"{name}.flags")
  cwd = os.getcwd()
  os.chdir(REPO)  # flagfiles include configs/base.flags relative to the repo
  try:
    for flag_name in list(FLAGS):
      FLAGS[flag_name].unparse()
    FLAGS([sys.argv[0], f"--flagfile={path}"], known_only=True)
  finally:
    os.chdir(cwd)
  return experiment_flags.simulation_config()


def bench(name, scans, workers):
  sim_config = _config_for(name)
  geometry = geometry_lib.make_geometry(sim_config.geometry)
  n, (h, w) = geometry.num_positions, geometry.probe_shape
  train, _ = images_lib.open_image_pools("default")
  cache = images_lib.ImageCache()
  batch = 4
  objs = np.stack([simulator.random_object(train, geometry.object_shape,
                                            sim_config.object,
                                            simulator.scan_rng(0, "train", i), cache)
                   for i in range(batch)])
  sim = simulator.Simulator(geometry)
  sim.amplitudes(objs)  # trace
  t0, reps = time.perf_counter(), 0
  while time.perf_counter() - t0 < 3.0:
    sim.amplitudes(objs)
    reps += 1
  fwd = reps * batch * n / (time.perf_counter() - t0)

  t0 = time.perf_counter()
  for i in range(batch, 2 * batch):
    simulator.random_object(train, geometry.object_shape, sim_config.object,
                             simulator.scan_rng(0, "train", i), cache)
  synth = batch / (time.perf_counter() - t0)

  with tempfile.TemporaryDirectory() as tmp:
    config = writer.WriteConfig(simulation=sim_config, num_train=scans,
                                num_test=0, num_shards=max(2, workers or 2),
                                amplitude_dtype=FLAGS.amplitude_dtype)
    t0 = time.perf_counter()
    writer.write_dataset(config, tmp, workers=workers, progress=False)
    write_rate = scans / (time.perf_counter() - t0)
    size_mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 2**20

    def read_all():
      count = 0
      for b in pipeline.make_dataset(tmp, "train", 4, shuffle=True):
        count += int(b["amplitudes"].shape[0])
      return count

    read_all()  # warm the page cache and trace the parser
    t0, total = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
      total += read_all()
    read_rate = total / (time.perf_counter() - t0)
  mb_per_scan = (n * h * w + 2 * np.prod(geometry.object_shape)) * 4 / 2**20
  print(f"{name:>13}: N={n} {h}x{w} object {geometry.object_shape[0]}x"
        f"{geometry.object_shape[1]} | forward {fwd:,.0f} patterns/s | objects "
        f"{synth:.0f}/s | write {write_rate:.2f} scans/s incl. worker start-up ({write_rate * n:,.0f} patterns/s, "
        f"{size_mb / scans:.1f} MB/scan on disk) | read {read_rate:,.1f} scans/s "
        f"({read_rate * mb_per_scan:,.0f} MB/s parsed)", flush=True)


def main(argv):
  del argv
  names = list(FLAGS.configs)
  scans, workers = FLAGS.scans, FLAGS.workers
  print(f"cores: {os.cpu_count()}, scans per config: {scans}")
  for name in names:
    bench(name, scans, workers)


if __name__ == "__main__":
  app.run(main)
