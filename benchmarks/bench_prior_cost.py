r"""What a prior step costs: its floating-point operations against the CPU's throughput.

  python benchmarks/bench_prior_cost.py [--prior=DIR] [--size=152,152] \
      [--steps=4] [--budget_s=0.157] [--repeats=5]

A prior step of the learned model (`--refine_prior`, docs/training.md)
denoises the real and imaginary parts of the object: one call of the
denoiser on a batch of 2 images of the object's size (152 x 152 for the
small_dense geometry). This script prints the CPU, then:

- the GFLOP of one such call, counted by TensorFlow's profiler on the traced
  graph (convolutions: 2 per multiply-add);
- its seconds per call (best of --repeats after a warm-up) in float32 and, where
  the CPU computes bfloat16 natively, in the policy the model uses
  (`utils.machine.fast_policy`), and the GFLOP/s that reaches;
- with --budget_s (e.g. a tenth of LSQML-300's seconds per scan, from
  `evaluate --run_lsqml`): the GFLOP/s that --steps prior steps need to fit
  in it, and the clock each core would need for that at 32 float32 FLOP per
  cycle, the most an AVX2 core does (two 8-wide fused multiply-adds per
  cycle). A clock no CPU has means no float32 implementation of this
  denoiser fits the budget on these cores: the budget needs fewer
  operations or native bfloat16.
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from ptychonet_tf import prior as prior_lib
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("prior", None, "An exported prior (prior.json, "
                    "prior.npz); default: the shipped one.")
flags.DEFINE_list("size", ["152", "152"], "Object height, width in pixels.")
flags.DEFINE_integer("steps", 4, "Prior steps per reconstruction.")
flags.DEFINE_float("budget_s", None, "Seconds the prior steps may take "
                   "(optional).")
flags.DEFINE_integer("repeats", 5, "Timed calls (the best one counts).")
FLAGS = flags.FLAGS

# The most float32 FLOP an AVX2 core does per cycle: two 8-wide FMA units.
AVX2_FLOP_PER_CYCLE = 32


def call_flops(denoiser, height, width):
  """Floating-point operations of one denoiser call on [2, height, width]."""
  function = tf.function(
      lambda x: denoiser(x, tf.fill([2], 0.1)),
      input_signature=[tf.TensorSpec([2, height, width], tf.float32)],
      autograph=False)
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants
  graph = convert_to_constants.convert_variables_to_constants_v2(
      function.get_concrete_function()).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(graph=graph,
                                       options=options).total_float_ops


def best_seconds(function, repeats):
  """The fastest of `repeats` timed calls of `function` (after a warm-up)."""
  function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  try:
    height, width = (int(v) for v in FLAGS.size)
  except ValueError:
    raise UserError(f"--size={','.join(FLAGS.size)} must be two integers, "
                    f"height,width") from None
  if min(height, width) < 8 or FLAGS.steps < 1 or FLAGS.repeats < 1:
    raise UserError("--size must be at least 8 a side, --steps and "
                    "--repeats at least 1")
  if FLAGS.budget_s is not None and FLAGS.budget_s <= 0:
    raise UserError(f"--budget_s={FLAGS.budget_s} must be > 0")
  logging.set_verbosity(logging.ERROR)  # TF's profiler's deprecation notes
  print(f"CPU: {machine.cpu_description()}")
  x = np.random.default_rng(0).uniform(size=(2, height, width)).astype(
      np.float32)
  sigma = tf.fill([2], 0.1)
  denoisers = {policy: prior_lib.load(FLAGS.prior, dtype=policy)
               for policy in dict.fromkeys(("float32", machine.fast_policy()))}
  gflop = call_flops(denoisers["float32"], height, width) / 1e9
  print(f"denoiser call on [2, {height}, {width}] (one prior step): "
        f"{gflop:.2f} GFLOP")
  print("| policy | s / call | GFLOP/s |")
  print("|---|---|---|")
  for policy, denoiser in denoisers.items():
    call = tf.function(lambda d=denoiser: d(x, sigma))
    seconds = best_seconds(lambda c=call: c().numpy(), FLAGS.repeats)
    print(f"| {policy} | {seconds:.3f} | {gflop / seconds:.0f} |")
  total = FLAGS.steps * gflop
  print(f"{FLAGS.steps} prior steps: {total:.1f} GFLOP")
  if FLAGS.budget_s:
    cores = len(machine.usable_cores())
    needed = total / FLAGS.budget_s
    print(f"to fit in {FLAGS.budget_s:.3f} s they need {needed:.0f} GFLOP/s: "
          f"on {cores} cores at {AVX2_FLOP_PER_CYCLE} float32 FLOP per "
          f"cycle (AVX2's most), a clock of "
          f"{needed / (cores * AVX2_FLOP_PER_CYCLE):.1f} GHz")


if __name__ == "__main__":
  app.run(main)
