r"""Training and inference throughput of PtychoNet, through the real input pipeline.

  python benchmarks/bench_train.py [--geometries=small,paper \
      --precisions=float32,mixed_bfloat16 --refine_steps=0,40 \
      --refine_groups=4 --refine_filters=0 --steps=10 \
      --warmup=3 --rounds=2 --data_dir=... --base_channels=16 --depth=4]

Short run: --steps=2 --warmup=1 --rounds=1 --infer_steps=2.

For each geometry (small = configs/small_dense.flags: 64x64 probe, 100
positions; paper = configs/dense.flags: 128x128, 354 positions), precision
and number of refinement steps K (0 = the paper's PtychoNet; K > 0 trains
end to end on whole scans, as the refinement epochs do) it prints, per line:

- train patterns/s fed by the real pipeline (`Trainer.train_dataset`:
  TFRecords -> parse -> cut into single patterns -> shuffle across scans ->
  batch -> strategy) next to the bare network's (the
  same train step on one batch held in memory), and the pipeline's cost
  1 - pipeline / bare (should stay under 10%);
- inference scans/s of the whole model (network + stitching + refinement
  steps), batch --infer_batch: "keras" as trained (stitching XLA-compiled),
  "serving" the graph the SavedModel exports (`model.export.float32_copy`:
  plain stitching, refinement steps XLA-compiled), and the share of the
  stitching layer in the keras figure.

The first lines name the CPU (lscpu model and the flags that matter for
TensorFlow's kernels). Without --data_dir it writes a few scans of each geometry into a temporary
folder (tools/make_tfrecords.py's writer). --steps/--warmup keep it short.
"""
import os
import shutil
import sys
import tempfile
import time


from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
_SCRATCH = [None]  # the run's temporary folder
GEOMETRIES = {
    # name: (probe, fermat count, step, train batch in scans, base channels)
    "small": ((64, 64), 100, 4.65, 2, 16),  # configs/small_dense.flags
    "paper": ((128, 128), 354, 9.53, 1, 32),  # configs/dense.flags
}
flags.DEFINE_list("geometries", ["small", "paper"], f"Of {sorted(GEOMETRIES)}.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"],
                  "Compute policies of the encoder-decoder to time "
                  "(mixed_bfloat16 = TrainConfig.mixed_precision).")
flags.DEFINE_integer("steps", 10, "Timed train steps per measurement.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, autotune).")
flags.DEFINE_integer("rounds", 2,
                     "Alternating pipeline/bare rounds; the best of each is "
                     "kept (the CPU may be shared).")
flags.DEFINE_integer("infer_steps", 5, "Timed inference calls.")
flags.DEFINE_integer("infer_batch", 1, "Scans per inference call.")
flags.DEFINE_integer("scans", 8, "Train scans written per geometry (no --data_dir).")
flags.DEFINE_string("data_dir", None,
                    "Use this dataset (one geometry) instead of temporary ones; "
                    "its name in the output is 'data_dir'.")
flags.DEFINE_integer("batch_size", 0, "Train batch in scans; 0 = per geometry "
                     "(small 2, paper 1).")
flags.DEFINE_integer("base_channels", 0, "Network width; 0 = per geometry "
                     "(small 16, paper 32, as in their configs).")
flags.DEFINE_integer("depth", 4, "Network depth.")
flags.DEFINE_list("refine_steps", ["0", "40"],
                  "Refinement steps K of the models to time (0 = the paper's "
                  "network; 40 = configs/small_dense.flags).")
flags.DEFINE_integer("refine_groups", 4,
                     "Position groups of the refinement steps (4 = "
                     "configs/small_dense.flags).")
flags.DEFINE_integer("refine_filters", 0,
                     "Width of the refinement CNNs (0 = none, as the configs).")

def _write_dataset(name, root):
  from ptychonet_tf.physics import simulator
  from ptychonet_tf.data import writer
  from ptychonet_tf.physics import geometry as geometry_lib
  probe, count, step = GEOMETRIES[name][:3]
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=probe),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=count, step=step)))
  out = os.path.join(root, name)
  config = writer.WriteConfig(simulation=sim, num_train=FLAGS.scans,
                              num_test=1, num_shards=2)
  writer.write_dataset(config, out, workers=1, progress=False)
  return out


def _rate(fn, steps, warmup):
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return steps / (time.perf_counter() - start)


def bench(name, data_dir, precision, batch_size, base_channels, refine_steps):
  """Returns a dict of throughputs for one geometry and precision.

  The precision is the model's own (TrainConfig.mixed_precision -> the
  encoder-decoder's policy); the global Keras dtype policy is not touched.
  """
  import tensorflow as tf
  from ptychonet_tf.model.network import NetworkConfig
  from ptychonet_tf.training import config as config_lib
  from ptychonet_tf.training import trainer
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=tempfile.mkdtemp(prefix="run_", dir=_SCRATCH[0]),
      network=NetworkConfig(base_channels=base_channels,
                            depth=FLAGS.depth, refine_steps=refine_steps,
                            refine_filters=FLAGS.refine_filters,
                            refine_groups=FLAGS.refine_groups),
      batch_size=batch_size, steps_per_epoch=1, epochs=1, refine_epochs=1,
      mixed_precision=precision == "mixed_bfloat16", export=False,
      verbose=False)
  run = trainer.Trainer(config, tf.distribute.get_strategy())
  patterns = run.patterns_per_step
  task = run.task
  if refine_steps:  # the end-to-end step of the refinement epochs
    epoch, step = config.epochs, task.make_refine_step()
  else:
    epoch, step = 0, task.pattern_step
  iterator = iter(task.train_dataset(epoch))
  # The same step on one batch held in memory: no input pipeline at all.
  batch = next(iter(task.train_dataset(epoch)))
  batch = tf.nest.map_structure(tf.identity, batch)
  bare_iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  pipeline_rate = bare_rate = 0.0
  for r in range(FLAGS.rounds):
    warmup = FLAGS.warmup if r == 0 else 1
    pipeline_rate = max(pipeline_rate, _rate(
        lambda: float(step(iterator)), FLAGS.steps, warmup) * patterns)
    bare_rate = max(bare_rate, _rate(
        lambda: float(step(bare_iterator)), FLAGS.steps, warmup) * patterns)
  model = run.model
  n, (h, w) = model.num_positions, model.probe_shape
  scan = tf.reshape(batch["amplitudes"], [-1, n, h, w])[:1]  # one scan
  amplitudes = tf.tile(scan, [FLAGS.infer_batch, 1, 1, 1])
  infer = tf.function(lambda a: model(a, training=False))
  # What the model's call stitches: [B, N, h, w, 2] (amplitude, phase).
  patches = tf.reshape(model.patch_tensor(amplitudes), [-1, n, h, w, 2])
  # The serving graph: float32, stitching without XLA (model.export).
  from ptychonet_tf.model import export as export_lib
  serving = export_lib.float32_copy(model)
  serve = tf.function(lambda a: serving(a, training=False))
  stitch = tf.function(model.stitch)
  infer_rate = stitch_rate = serve_rate = 0.0
  for _ in range(FLAGS.rounds):
    infer_rate = max(infer_rate, _rate(
        lambda: infer(amplitudes)["phase"].numpy(), FLAGS.infer_steps, 1))
    serve_rate = max(serve_rate, _rate(
        lambda: serve(amplitudes)["phase"].numpy(), FLAGS.infer_steps, 1))
    stitch_rate = max(stitch_rate, _rate(
        lambda: stitch(patches).numpy(), FLAGS.infer_steps * 4, 1))
  infer_rate *= FLAGS.infer_batch
  stitch_rate *= FLAGS.infer_batch
  serve_rate *= FLAGS.infer_batch
  return dict(pipeline=pipeline_rate, bare=bare_rate,
              cost=1.0 - pipeline_rate / bare_rate, infer=infer_rate,
              serve=serve_rate, stitch_share=infer_rate / stitch_rate)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  from ptychonet_tf.model import network  # pylint: disable=g-import-not-at-top
  for precision in FLAGS.precisions:
    if precision not in network.COMPUTE_POLICIES:
      sys.exit(f"error: --precisions: unknown precision {precision!r}; "
               f"expected one of {network.COMPUTE_POLICIES}")
  try:
    refine_steps = [int(k) for k in FLAGS.refine_steps]
  except ValueError:
    sys.exit(f"error: --refine_steps: expected integers, got "
             f"{FLAGS.refine_steps}")
  if any(k < 0 for k in refine_steps):
    sys.exit("error: --refine_steps must be >= 0")
  root = tempfile.mkdtemp(prefix="bench_train_")
  _SCRATCH[0] = root
  if FLAGS.data_dir:
    datasets = {"data_dir": FLAGS.data_dir}
  else:
    for name in FLAGS.geometries:
      if name not in GEOMETRIES:
        sys.exit(f"error: --geometries: unknown geometry {name!r}; expected "
                 f"{sorted(GEOMETRIES)}")
    datasets = {name: _write_dataset(name, root) for name in FLAGS.geometries}
  from ptychonet_tf.utils import machine  # pylint: disable=g-import-not-at-top
  print("CPU:", machine.cpu_description())
  print(f"{'geometry':>8} {'precision':>15} {'K':>3} {'batch':>5} {'width':>5} | "
        f"train patterns/s: {'pipeline':>8} {'bare':>8} {'cost':>6} | "
        f"inference scans/s: {'keras':>7} {'serving':>7} {'stitch':>7}")
  for name, data_dir in datasets.items():
    defaults = GEOMETRIES.get(name, (0, 0, 0, 2, 16))
    batch = FLAGS.batch_size or defaults[3]
    width = FLAGS.base_channels or defaults[4]
    for precision in FLAGS.precisions:
      for k in refine_steps:
        r = bench(name, data_dir, precision, batch, width, k)
        print(f"{name:>8} {precision:>15} {k:>3} {batch:>5} {width:>5} | "
              f"{'':>17} {r['pipeline']:8.0f} {r['bare']:8.0f} "
              f"{r['cost']:6.1%} | {'':>18} {r['infer']:7.2f} "
              f"{r['serve']:7.2f} {r['stitch_share']:7.1%}", flush=True)
  shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  app.run(main)
