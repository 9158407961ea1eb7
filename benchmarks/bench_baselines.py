r"""DM and ePIE speed for the small and paper geometries, next to their FFT floor.

  python benchmarks/bench_baselines.py [--configs=small_dense,dense] \
      [--dm_iterations=20] [--epie_epochs=2] [--batch=1]

Per config (probe size, scan pattern and count from configs/<name>.flags):

- DM: steady-state seconds per iteration (XLA-compiled chunks of 10, the
  first chunk, which traces and compiles, left out) for a batch of --batch
  scans, and per scan.
- DM floor: the two FFTs of N patterns one iteration must do (fft2d of the
  estimate, ifft2d of the correction), timed alone in a compiled function.
- ePIE: steady-state seconds per epoch (N sequential position updates).
- ePIE floor: N sequential fft2d + ifft2d pairs of one pattern (per scan of
  the batch), timed alone in a compiled while loop.

The ratio column is the gap to the floor: everything else an iteration does
(gather/scatter of windows, the overlap sums, moduli, error bookkeeping).
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import epie
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib

flags.DEFINE_list("configs", ["small_dense", "dense"], "Config names under configs/.")
flags.DEFINE_integer("dm_iterations", 20, "DM iterations per run (>= 20: the "
                     "first chunk of 10 is the warm-up).")
flags.DEFINE_integer("epie_epochs", 2, "ePIE epochs per run (>= 2: the first "
                     "is the warm-up; 0 skips ePIE).")
flags.DEFINE_integer("batch", 1, "Scans reconstructed together.")
flags.DEFINE_float("min_seconds", 2.0, "Minimum time spent timing each FFT floor.")
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
        f"{'ratio':>6s}")
  rows = []
  if FLAGS.dm_iterations:
    config = dm.DMConfig(iterations=FLAGS.dm_iterations, chunk=10,
                         progress=False)
    result = dm.difference_map(amps, geometry.probe, geometry.layout,
                               geometry.object_shape, config)
    floor = dm_floor(batch, count, h, w, FLAGS.min_seconds)
    rows.append(("DM (per iteration)", result.seconds_per_iteration, floor))
  if FLAGS.epie_epochs:
    config = epie.EPIEConfig(iterations=FLAGS.epie_epochs, chunk=1,
                             progress=False)
    result = epie.epie(amps, geometry.probe, geometry.layout,
                       geometry.object_shape, config)
    floor = epie_floor(batch, count, h, w, FLAGS.min_seconds)
    rows.append(("ePIE (per epoch)", result.seconds_per_iteration, floor))
  for label, seconds, floor in rows:
    print(f"  {label:26s} {seconds:9.4f} {seconds / batch:12.4f} "
          f"{floor:10.4f} {seconds / floor:6.2f}")


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  if FLAGS.dm_iterations and FLAGS.dm_iterations < 20:
    raise UserError(f"--dm_iterations={FLAGS.dm_iterations} must be 0 or >= 20 "
                    f"(the first chunk of 10 is the warm-up)")
  if FLAGS.epie_epochs == 1 or FLAGS.epie_epochs < 0:
    raise UserError(f"--epie_epochs={FLAGS.epie_epochs} must be 0 or >= 2")
  if FLAGS.batch < 1:
    raise UserError(f"--batch={FLAGS.batch} must be >= 1")
  machine.set_threads(FLAGS.threads)
  print(machine.cpu_description())
  print(f"TensorFlow {tf.__version__}, {len(os.sched_getaffinity(0))} of "
        f"{os.cpu_count()} cores usable (taskset), --threads={FLAGS.threads}, "
        f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}")
  for name in FLAGS.configs:
    bench(name)


if __name__ == "__main__":
  app.run(main)
