r"""Exports the latest checkpoint of a training run as a TF Serving SavedModel.

  python -m ptychonet_tf.export --model_dir=runs/small_dense \
      --export_dir=saved_models/small_dense

Writes <export_dir>/<step>/ (saved_model.pb, variables/), the layout TF
Serving expects, with the signature serving_default: amplitudes float32
[batch, N, h, w] -> amplitude, phase float32 [batch, H, W]; the training
geometry's probe and layout are baked in (see docs/serving.md). Without
--export_dir it writes to <model_dir>/export. With --keep_refine_steps=K a
model trained with refinement steps is exported with only its first K (0: the
network and stitching alone), e.g. to put the cost of each step on the
time-to-quality figure of `evaluate`.
"""
import os

from absl import flags
from absl import logging

from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError, report_user_errors

experiment_flags.define_run_dir_flags()
flags.DEFINE_integer("keep_refine_steps", None,
                     "Export only the first K of the model's refinement steps "
                     "(0: the stitched network alone, the paper's PtychoNet); "
                     "default all.")
flags.DEFINE_bool("xla", True,
                  "Run the refinement steps, and then the stitching, as "
                  "XLA-compiled functions (faster on CPU; TF Serving then "
                  "needs --xla_cpu_compilation_enabled=true). --noxla "
                  "exports plain ops. Models without refinement steps never "
                  "need XLA.")
FLAGS = flags.FLAGS


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("model_dir")
  export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserError(f"--export_dir={export_dir} is a file; expected a directory")
  files.check_writable_dir(export_dir, "--export_dir")  # before the model loads
  logging.set_verbosity(logging.WARNING)
  from ptychonet_tf.model import export as export_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.training import run_dir  # pylint: disable=g-import-not-at-top
  model, geometry, step = run_dir.load_trained_model(FLAGS.model_dir)
  if FLAGS.keep_refine_steps is not None and not (
      0 <= FLAGS.keep_refine_steps <= model.refine_steps):
    raise UserError(f"--keep_refine_steps={FLAGS.keep_refine_steps} must be "
                    f"in [0, {model.refine_steps}], the refinement steps of "
                    f"the run in {FLAGS.model_dir}")
  path = export_lib.export_saved_model(model, geometry.probe, export_dir,
                                       max(step, 1), FLAGS.keep_refine_steps,
                                       FLAGS.xla)
  n, (h, w) = geometry.num_positions, geometry.probe_shape
  big_h, big_w = geometry.object_shape
  print(f"exported {path}: serving_default amplitudes [batch, {n}, {h}, {w}] "
        f"-> amplitude, phase [batch, {big_h}, {big_w}]")


def run():
  cli.run_command(main, __name__, (experiment_flags.RUN_DIR,))


if __name__ == "__main__":
  run()
