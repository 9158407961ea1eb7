r"""The main job end to end at CPU size: data, training, export, evaluation, reports.

  python -m ptychonet_tf.demo [--test_images=DIR] [--transfer_images=DIR] \
      [--reports_dir=reports]

Runs, each step as its own command (printed, so any step can be repeated by
hand), and each resuming when run again:

1. tools/make_tfrecords.py for configs/small_dense.flags and
   configs/small_sparse.flags, from the embedded default images;
2. ptychonet_tf.train for both (checkpoints in runs/<name>, SavedModels in
   saved_models/<name>); a model with refinement steps is also exported
   without them (saved_models/<name>_k0: its network and stitching alone,
   the paper's PtychoNet);
3. with --test_images=DIR, 20 test scans of each geometry simulated from
   the photographs in DIR (tfrecords/<name>_photos; the models never saw
   them); ptychonet_tf.evaluate for both, on those scans or else on each
   experiment's own test split: the learned model (and its K = 0 export),
   DM from random and flat starts, DM at equal time and DM started from the
   learned model, into reports/<name>/report.md (with the time-to-quality
   figure);
4. when --transfer_images is a folder: a phase-only test set from it
   (configs/small_transfer.flags) evaluated with the dense model trained on
   natural images, into reports/small_transfer/report.md.

Ends by writing reports/demo.md: every stage's wall time and the tables.
"""
import os
import sys
import time

from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.cli.stages import Stages, fmt as _fmt
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("transfer_images", "",
                    "Folder of images from another domain for the cross-domain "
                    "test (skipped when empty or missing).")
flags.DEFINE_string("test_images", "",
                    "Folder of photographs the test scans of every experiment "
                    "are simulated from (its own geometry, 20 scans, never "
                    "trained on: tfrecords/<name>_photos); empty or missing: "
                    "each experiment's own test split.")
flags.DEFINE_string("reports_dir", "reports", "Where the reports go.")
flags.DEFINE_string("tfrecords_dir", "tfrecords", "Where the datasets go.")
flags.DEFINE_string("runs_dir", "runs", "Where checkpoints and TensorBoard logs go.")
flags.DEFINE_string("saved_models_dir", "saved_models", "Where the exports go.")
flags.DEFINE_list("experiments", ["small_dense", "small_sparse"],
                  "Experiments (configs/<name>.flags) to train and evaluate.")
flags.DEFINE_list("train_args", [],
                  "Extra flags for every training run, e.g. --epochs=1 for a "
                  "quick look (comma-separated).")
flags.DEFINE_integer("dm_iterations", 300, "DM iterations in the evaluation.")
flags.DEFINE_integer("num_scans", 8,
                     "Test scans per evaluation (0 = all 20): the DM rows "
                     "take most of the evaluation time (8: two DM batches "
                     "of 4).")
FLAGS = flags.FLAGS

TRANSFER = "small_transfer"
LEARNED = "PtychoNet"
PHOTOS = "_photos"  # suffix of the test sets simulated from --test_images


def _training_setting(name, flag, default=0):
  """The integer --<flag> that training configs/<name>.flags with
  --train_args gets: the last setting, flagfiles expanded by absl as
  training does (`default` if none)."""
  args = FLAGS.read_flags_from_files(
      [f"--flagfile=configs/{name}.flags", *FLAGS.train_args])
  value = default
  for arg in args:
    if arg.startswith(f"--{flag}="):
      value = int(arg.split("=", 1)[1])
  return value


def _refine_steps(name):
  return _training_setting(name, "refine_steps")


def _learned_label(name):
  """The learned model's row name, e.g. "PtychoNet (K=40 in 4 groups)"."""
  k = _refine_steps(name)
  groups = _training_setting(name, "refine_groups", 1) if k else 1
  return f"{LEARNED} (K={k}" + (f" in {groups} groups)" if groups > 1 else ")")


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  py = sys.executable
  experiments = list(FLAGS.experiments)
  for name in experiments:
    if not os.path.isfile(os.path.join("configs", f"{name}.flags")):
      raise UserError(f"configs/{name}.flags does not exist (run the demo from "
                      f"the repository root)")
  transfer = bool(FLAGS.transfer_images) and os.path.isdir(FLAGS.transfer_images)
  if FLAGS.transfer_images and not transfer:
    print(f"note: {FLAGS.transfer_images} is not a folder; skipping the "
          f"cross-domain test")
  if transfer and "small_dense" not in experiments:
    raise UserError("the cross-domain test needs the small_dense experiment")
  photos = bool(FLAGS.test_images) and os.path.isdir(FLAGS.test_images)
  if FLAGS.test_images and not photos:
    print(f"note: {FLAGS.test_images} is not a folder; evaluating on each "
          f"experiment's own test split")
  refining = [name for name in experiments if _refine_steps(name)]
  stages = Stages((4 if photos else 3) * len(experiments) + len(refining) +
                  (2 if transfer else 0))
  reports = []
  for name in experiments:
    stages.run(f"simulate {name}", [
        py, "tools/make_tfrecords.py", f"--flagfile=configs/{name}.flags",
        f"--out_dir={FLAGS.tfrecords_dir}/{name}"])
  if photos:
    for name in experiments:
      stages.run(f"simulate {name} test scans from {FLAGS.test_images}", [
          py, "tools/make_tfrecords.py", f"--flagfile=configs/{name}.flags",
          f"--images={FLAGS.test_images}", "--num_train=0", "--num_test=20",
          "--num_shards=1", f"--out_dir={FLAGS.tfrecords_dir}/{name}{PHOTOS}"])
  for name in experiments:
    stages.run(f"train {name}", [
        py, "-m", "ptychonet_tf.train", f"--flagfile=configs/{name}.flags",
        f"--data_dir={FLAGS.tfrecords_dir}/{name}",
        f"--model_dir={FLAGS.runs_dir}/{name}",
        f"--export_dir={FLAGS.saved_models_dir}/{name}"] + list(FLAGS.train_args))
  for name in refining:
    stages.run(f"export {name} without its refinement steps", [
        py, "-m", "ptychonet_tf.export", f"--model_dir={FLAGS.runs_dir}/{name}",
        f"--export_dir={FLAGS.saved_models_dir}/{name}_k0",
        "--keep_refine_steps=0"])

  def evaluate(name, model, title, stage, data=None):
    out = os.path.join(FLAGS.reports_dir, name)
    data = data or name
    k = _refine_steps(model)
    models = [f"{_learned_label(model)}={FLAGS.saved_models_dir}/{model}"]
    if k:
      # No commas in names: --saved_model is a comma-separated list.
      models.append(f"{LEARNED} (K=0: the paper's network)="
                    f"{FLAGS.saved_models_dir}/{model}_k0")
    stages.run(stage, [
        py, "-m", "ptychonet_tf.evaluate", f"--flagfile=configs/{name}.flags",
        f"--data_dir={FLAGS.tfrecords_dir}/{data}",
        "--saved_model=" + ",".join(models),
        f"--dm_iterations={FLAGS.dm_iterations}",
        f"--num_scans={FLAGS.num_scans}", f"--out_dir={out}",
        f"--title={title}"])
    reports.append(out)

  for name in experiments:
    if photos:
      evaluate(name, name, f"{name} (test scans from "
               f"{os.path.basename(os.path.normpath(FLAGS.test_images))})",
               f"evaluate {name} on {FLAGS.test_images}", f"{name}{PHOTOS}")
    else:
      evaluate(name, name, name, f"evaluate {name}")
  if transfer:
    stages.run(f"simulate {TRANSFER} from {FLAGS.transfer_images}", [
        py, "tools/make_tfrecords.py", f"--flagfile=configs/{TRANSFER}.flags",
        f"--images={FLAGS.transfer_images}",
        f"--out_dir={FLAGS.tfrecords_dir}/{TRANSFER}"])
    evaluate(TRANSFER, "small_dense",
             f"{TRANSFER} (phase-only tissue, natural-image model)",
             f"evaluate {TRANSFER} with the small_dense model")

  from ptychonet_tf.utils import files  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.utils import machine  # pylint: disable=g-import-not-at-top
  total = time.time() - stages.start
  lines = ["# Demo report\n",
           f"`make demo` (`python -m ptychonet_tf.demo`) took {_fmt(total)} "
           f"on {machine.cpu_description()}.\n",
           "| stage | wall time |", "|---|---|"]
  lines += [f"| {title} | {_fmt(sec)} |" for title, sec in stages.times]
  for out in reports:
    name = os.path.basename(out)
    with open(os.path.join(out, "results.md")) as f:
      tables = f.read()
    lines += ["", f"## {name}", "", f"Full report: [{name}/report.md]({name}/report.md)",
              "", tables]
  files.write_text(os.path.join(FLAGS.reports_dir, "demo.md"), "\n".join(lines) + "\n")
  print(f"\ndemo finished in {_fmt(total)}; reports in {FLAGS.reports_dir}/ "
        f"(summary: {FLAGS.reports_dir}/demo.md)")


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
