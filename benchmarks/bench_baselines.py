r"""DM, ePIE and LSQML speed for the small and paper geometries, next to their FFT floor.

  python benchmarks/bench_baselines.py [--configs=small_dense,dense] \
      [--dm_iterations=100] [--epie_epochs=4] [--lsqml_iterations=20] \
      [--batch=1] [--rounds=3] [--position_groups=0]

Per config (probe size, scan pattern and count from configs/<name>.flags):

- DM: steady-state seconds per iteration (XLA-compiled chunks of 10; a
  first run traces and compiles and is left out) for a batch of --batch
  scans, and per scan.
- DM floor: the two FFTs of N patterns one iteration must do (fft2d of the
  estimate, ifft2d of the correction), timed alone in a compiled function.
- ePIE: steady-state seconds per epoch (N sequential position updates).
- ePIE floor: N sequential fft2d + ifft2d pairs of one pattern (per scan of
  the batch), timed alone in a compiled while loop.
- LSQML: steady-state seconds per iteration (position batches of 10); its
  floor is DM's (the same two FFTs of N patterns per iteration).

The solvers come from the registry (`ptychonet_tf.reconstructors`).

The ratio column is the gap to the floor: everything else an iteration does
(gather/scatter of windows, the overlap sums, moduli, error bookkeeping).

Shared machines drift: the same FFTs can take 30% longer from one minute to
the next. So each solver is built and compiled once, then timed in --rounds
rounds, each round timing the solver and right after it its floor; the row
gives the medians over the rounds and the ratio column the median of the
rounds' own ratios, with their smallest and largest in brackets.
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import epie
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib

flags.DEFINE_list("configs", ["small_dense", "dense"], "Config names under configs/.")
flags.DEFINE_integer("dm_iterations", 100, "DM iterations per timed run (>= 10; "
                     "a first run compiles).")
flags.DEFINE_integer("epie_epochs", 4, "ePIE epochs per timed run (0 skips "
                     "ePIE; a first run compiles).")
flags.DEFINE_integer("lsqml_iterations", 20, "LSQML iterations per timed "
                     "run (0 skips LSQML; >= 10, a first run compiles).")
flags.DEFINE_integer("batch", 1, "Scans reconstructed together.")
flags.DEFINE_float("min_seconds", 2.0, "Minimum time spent timing each FFT "
                   "floor, per round.")
flags.DEFINE_integer("position_groups", 0, "DM's position groups "
                     "(DMConfig.position_groups; 0: automatic).")
flags.DEFINE_integer("rounds", 3, "Rounds of (solver, floor) timings; medians "
                     "are printed.")
flags.DEFINE_integer("threads", 0, "TensorFlow CPU threads (0: all cores); "
                     "compare --threads=1 with the default, or run under "
                     "`taskset -c 0`.")
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_flagfile(name):
  """{flag: value} of configs/<name>.flags, following --flagfile includes."""
  path = os.path.join(REPO, "configs", f"{name}.flags")
  if not os.path.isfile(path):
    raise UserError(f"config {name!r} has no file {path}")
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--") or "=" not in line:
        continue
      key, value = line[2:].split("=", 1)
      if key == "flagfile":
        values.update(read_flagfile(os.path.splitext(os.path.basename(value))[0]))
      else:
        values[key] = value
  return values


def make_geometry(name):
  values = read_flagfile(name)
  size = tuple(int(s) for s in values.get("probe_size", "64,64").split(","))
  pattern = values.get("scan", "fermat")
  scan = geometry_lib.ScanConfig(
      pattern=pattern, count=int(values.get("scan_count", 100)),
      step=float(values.get("scan_step", 4.65)),
      rows=int(values.get("mesh_rows", 10)), cols=int(values.get("mesh_cols", 10)),
      every=int(values.get("mesh_every", 1)))
  probe = geometry_lib.ProbeConfig(
      size=size, kind=values.get("probe_kind", "zone_plate"),
      diameter=float(values.get("probe_diameter", 0.5)))
  return geometry_lib.make_geometry(geometry_lib.GeometryConfig(probe, scan))


def timed(fn, min_seconds):
  """Seconds per call of fn() after a warm-up call, over >= min_seconds."""
  fn()
  start, calls = time.perf_counter(), 0
  while calls < 3 or time.perf_counter() - start < min_seconds:
    fn()
    calls += 1
  return (time.perf_counter() - start) / calls


def dm_floor(batch, count, h, w, min_seconds):
  """Seconds of one fft2d + one ifft2d of [B, N, h, w] complex64."""
  x = tf.complex(tf.random.normal([batch, count, h, w]),
                 tf.random.normal([batch, count, h, w]))

  @tf.function(jit_compile=True)
  def two_ffts(x):
    return tf.signal.ifft2d(tf.signal.fft2d(x) * 0.5)

  return timed(lambda: two_ffts(x).numpy(), min_seconds)


def epie_floor(batch, count, h, w, min_seconds):
  """Seconds of N sequential fft2d + ifft2d pairs of [B, h, w] complex64."""
  x = tf.complex(tf.random.normal([batch, h, w]), tf.random.normal([batch, h, w]))

  @tf.function
  def sweep(x):
    def body(k, y):
      return k + 1, tf.signal.ifft2d(tf.signal.fft2d(y) * 0.5)
    return tf.while_loop(lambda k, _: k < count, body, (tf.constant(0), x))[1]

  return timed(lambda: sweep(x).numpy(), min_seconds)


def bench(name):
  geometry = make_geometry(name)
  count, (h, w) = geometry.num_positions, geometry.probe_shape
  big_h, big_w = geometry.object_shape
  batch = FLAGS.batch
  rng = np.random.default_rng(0)
  shape = (batch,) + geometry.object_shape
  obj = (rng.uniform(0.5, 1.0, shape) *
         np.exp(1j * rng.uniform(-1.0, 0.0, shape))).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, geometry.probe,
                                        geometry.layout).numpy()
  print(f"\n{name}: probe {h}x{w}, {count} positions, object {big_h}x{big_w}, "
        f"batch {batch}")
  print(f"  {'':26s} {'s/iter':>9s} {'s/iter/scan':>12s} {'FFT floor':>10s} "
        f"{'ratio':>6s} [range]")
  solvers = []
  if FLAGS.dm_iterations:
    solvers.append(("DM (per iteration)", "dm", dm.DMConfig(
        iterations=FLAGS.dm_iterations, chunk=10, progress=False,
        position_groups=FLAGS.position_groups), dm_floor))
  if FLAGS.epie_epochs:
    solvers.append(("ePIE (per epoch)", "epie", epie.EPIEConfig(
        iterations=FLAGS.epie_epochs, chunk=1, progress=False), epie_floor))
  if FLAGS.lsqml_iterations:
    solvers.append(("LSQML (per iteration)", "lsqml", lsqml.LSQMLConfig(
        iterations=FLAGS.lsqml_iterations, chunk=10, progress=False),
                    dm_floor))
  rows = []
  for label, method, config, floor in solvers:
    solver = reconstructors.build(method, amps, geometry.probe,
                                  geometry.layout, geometry.object_shape,
                                  config)
    rows.append((label, rounds(
        lambda s=solver: s.run().seconds_per_iteration,
        lambda f=floor: f(batch, count, h, w, FLAGS.min_seconds))))
  for label, (seconds, floor, ratio, low, high) in rows:
    print(f"  {label:26s} {seconds:9.4f} {seconds / batch:12.4f} "
          f"{floor:10.4f} {ratio:6.2f} [{low:.2f}-{high:.2f}]")


def rounds(solver_seconds, floor_seconds):
  """Medians of --rounds (solver, floor) timings and of their ratios.

  The solver's first run compiles it and is left out; every later run is
  all steady-state chunks.

  Returns:
    (solver s, floor s, median ratio, smallest ratio, largest ratio).
  """
  solver_seconds()
  times = np.array([(solver_seconds(), floor_seconds())
                    for _ in range(FLAGS.rounds)])
  ratios = times[:, 0] / times[:, 1]
  return (float(np.median(times[:, 0])), float(np.median(times[:, 1])),
          float(np.median(ratios)), float(ratios.min()), float(ratios.max()))


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  if FLAGS.dm_iterations < 0 or 0 < FLAGS.dm_iterations < 10:
    raise UserError(f"--dm_iterations={FLAGS.dm_iterations} must be 0 or >= 10 "
                    f"(one compiled chunk)")
  if FLAGS.lsqml_iterations < 0 or 0 < FLAGS.lsqml_iterations < 10:
    raise UserError(f"--lsqml_iterations={FLAGS.lsqml_iterations} must be 0 "
                    f"or >= 10 (one compiled chunk)")
  if FLAGS.epie_epochs < 0:
    raise UserError(f"--epie_epochs={FLAGS.epie_epochs} must be >= 0")
  if FLAGS.batch < 1:
    raise UserError(f"--batch={FLAGS.batch} must be >= 1")
  if FLAGS.position_groups < 0:
    raise UserError(f"--position_groups={FLAGS.position_groups} must be >= 0")
  if FLAGS.rounds < 1:
    raise UserError(f"--rounds={FLAGS.rounds} must be >= 1")
  machine.set_threads(FLAGS.threads)
  print(machine.cpu_description())
  print(f"TensorFlow {tf.__version__}, {len(machine.usable_cores())} of "
        f"{os.cpu_count()} cores usable (taskset), --threads={FLAGS.threads}, "
        f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}")
  for name in FLAGS.configs:
    bench(name)


if __name__ == "__main__":
  app.run(main)
