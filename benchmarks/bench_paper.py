r"""The paper-size path end to end on this machine, honestly small.

  python benchmarks/bench_paper.py [--flagfile_name=dense --num_train=4 \
      --num_test=2 --train_steps=2 --refine_train_steps=2 --eval_scans=1 \
      --dm_iterations=300 --work_dir=DIR --keep]

Runs the commands of the design card's usage with `configs/dense.flags`
(354 patterns of 128x128 per scan, object 478x479, width 32, K = 40
refinement steps in 4 groups) and reduced counts, each in its own process:

1. `make_tfrecords` with the local writer (--workers=2) and with Apache
   Beam's DirectRunner (--runner=beam --workers=2, when apache-beam is
   installed): simulation scans/s, disk per scan, and whether the two wrote
   the same bytes;
2. `benchmarks/bench_train.py` on those scans: steady-state training
   patterns/s of the pattern epochs (K = 0, batch 1 scan), seconds per
   end-to-end refinement step (K = 40 on one whole scan) and serving scans/s;
3. `train` (--train_steps steps of the pattern epoch at --batch_size scans'
   worth of patterns, --refine_train_steps of the end-to-end epoch, then
   export), `evaluate` (the model and DM with
   --dm_iterations on --eval_scans test scans) and serving through
   `saved_model_cli run` (the TF Serving signature, on one scan).

For every command: wall seconds and the peak resident memory of its largest
process. Then the projection of the full run of `configs/dense.flags`
(2,000 + 100 scans; 50 pattern epochs of 2,000 x 354 patterns; one
end-to-end epoch of 500 steps) on this machine, and on a GPU whose
bench_train figures you pass (--gpu_patterns_per_s, --gpu_refine_step_s),
for one GPU and for eight (MirroredStrategy, assumed linear).
The first line names the CPU.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_string("flagfile_name", "dense", "Experiment under configs/.")
flags.DEFINE_integer("num_train", 4, "Training scans to simulate.")
flags.DEFINE_integer("num_test", 2, "Test scans to simulate.")
flags.DEFINE_integer("workers", 2, "Writer processes (local and Beam).")
flags.DEFINE_integer("train_steps", 2, "Steps of the pattern epoch of `train`.")
flags.DEFINE_integer("batch_size", 1,
                     "`train`'s batch in scans' worth of patterns: dense.flags "
                     "asks for 8 (2,832 patterns of 128x128 per step), which "
                     "a 24 GB CPU machine cannot hold (killed at 23.6 GB).")
flags.DEFINE_integer("refine_train_steps", 2,
                     "Steps of the end-to-end epoch of `train`.")
flags.DEFINE_integer("refine_steps", 20,
                     "`train`'s refinement steps K: dense.flags asks for 40, "
                     "whose end-to-end epoch a 24 GB CPU machine cannot hold "
                     "inside `train` (killed at 24.4 GB; bench_train's bare "
                     "K=40 step peaks at 21.4 GB).")
flags.DEFINE_integer("bench_steps", 2, "Timed steps of bench_train.")
flags.DEFINE_integer("eval_scans", 1, "Test scans `evaluate` scores.")
flags.DEFINE_integer("dm_iterations", 300, "DM iterations in `evaluate`.")
flags.DEFINE_bool("beam", True, "Also time the Beam DirectRunner writer.")
flags.DEFINE_string("work_dir", None, "Scratch folder (default: a temp one).")
flags.DEFINE_bool("keep", False, "Keep the scratch folder.")
flags.DEFINE_float("gpu_patterns_per_s", 0.0,
                   "bench_train's pattern-epoch patterns/s on one GPU, for "
                   "the GPU projection (0: none).")
flags.DEFINE_float("gpu_refine_step_s", 0.0,
                   "bench_train's seconds per end-to-end step on one GPU.")
FLAGS = flags.FLAGS

# The full run of configs/dense.flags (its counts and schedule).
FULL = dict(num_train=2000, num_test=100, epochs=50, refine_steps=500)

# Runs ARGS, then prints the largest ru_maxrss (KiB) of its process tree.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'@@peak_kib {kib}', flush=True)\n"
    "sys.exit(rc)\n")


def run(name, args, log_dir):
  """Runs `python ARGS` from the repository root; returns (wall s, peak GB,
  stdout). Exits on failure."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  log = os.path.join(log_dir, f"{name}.log")
  start = time.perf_counter()
  with open(log, "w") as f:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable,
                           *args], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=f,
                          text=True, check=False)
  wall = time.perf_counter() - start
  if proc.returncode:
    with open(log) as f:
      tail = f.read()[-2000:]
    sys.exit(f"error: {name} failed with status {proc.returncode} "
             f"({' '.join(args)}):\n{proc.stdout[-1500:]}\n{tail}")
  peak = re.search(r"@@peak_kib (\d+)", proc.stdout)
  peak_gb = int(peak.group(1)) * 1024 / 1e9 if peak else float("nan")
  return wall, peak_gb, proc.stdout


def digests(folder):
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith(".tfrecord"):
      with open(os.path.join(folder, name), "rb") as f:
        out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


def shard_bytes(folder):
  return sum(os.path.getsize(os.path.join(folder, n))
             for n in os.listdir(folder) if n.endswith(".tfrecord"))


def written_seconds(stdout):
  """make_tfrecords' own time of the simulation (after imports)."""
  found = re.search(r"kept from an earlier run, ([\d.]+) s", stdout)
  return float(found.group(1)) if found else float("nan")


def row(name, wall, peak, figure=""):
  print(f"{name:<34} {wall:8.1f} s {peak:7.2f} GB  {figure}", flush=True)


def hours(seconds):
  return f"{seconds / 3600:.1f} h" if seconds >= 3600 else \
      f"{seconds / 60:.1f} min"


def main(argv):
  del argv
  from ptychonet_tf.utils import machine  # pylint: disable=g-import-not-at-top
  print("CPU:", machine.cpu_description())
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_paper_")
  os.makedirs(work, exist_ok=True)
  logs = os.path.join(work, "logs")
  os.makedirs(logs, exist_ok=True)
  flagfile = f"--flagfile=configs/{FLAGS.flagfile_name}.flags"
  counts = [f"--num_train={FLAGS.num_train}", f"--num_test={FLAGS.num_test}",
            "--num_shards=2", "--noprogress"]
  scans = FLAGS.num_train + FLAGS.num_test
  print(f"{FLAGS.flagfile_name}.flags, {FLAGS.num_train} + {FLAGS.num_test} "
        f"scans; logs in {logs}")
  print(f"{'command':<34} {'wall':>10} {'peak RSS':>10}  figure")

  local = os.path.join(work, "data")
  wall, peak, out = run("make_tfrecords", [
      "tools/make_tfrecords.py", flagfile, *counts, f"--out_dir={local}",
      f"--workers={FLAGS.workers}"], logs)
  sim_rate = scans / written_seconds(out)
  per_scan = shard_bytes(local) / scans
  row(f"make_tfrecords (local, {FLAGS.workers} workers)", wall, peak,
      f"{sim_rate:.2f} scans/s simulated; {per_scan / 1e6:.1f} MB per scan")
  beam_rate = float("nan")
  if FLAGS.beam:
    beam_dir = os.path.join(work, "data_beam")
    wall, peak, out = run("make_tfrecords_beam", [
        "tools/make_tfrecords.py", flagfile, *counts, f"--out_dir={beam_dir}",
        "--runner=beam", f"--workers={FLAGS.workers}"], logs)
    beam_rate = scans / written_seconds(out)
    same = digests(beam_dir) == digests(local)
    row(f"make_tfrecords (Beam Direct, {FLAGS.workers})", wall, peak,
        f"{beam_rate:.2f} scans/s simulated; same bytes: "
        f"{'yes' if same else 'NO'}")

  wall, peak, out = run("bench_train", [
      "benchmarks/bench_train.py", f"--data_dir={local}",
      "--precisions=float32", "--refine_steps=0,40", "--refine_groups=4",
      "--batch_size=1", "--base_channels=32", f"--steps={FLAGS.bench_steps}",
      "--warmup=1", "--rounds=1", "--infer_steps=2"], logs)
  rates = {}
  for line in out.splitlines():
    parts = line.split()
    if len(parts) > 9 and parts[0] == "data_dir":
      rates[int(parts[2])] = (float(parts[6]), float(parts[11]))
  train_rate, _ = rates[0]
  refine_rate, serve_k40 = rates[40]
  with open(os.path.join(local, "dataset.json")) as f:
    n = json.load(f)["num_positions"]
  refine_step_s = n / refine_rate
  row("bench_train (steady state)", wall, peak,
      f"{train_rate:.0f} patterns/s (K=0); {refine_step_s:.2f} s per "
      f"end-to-end step (K=40); serving {serve_k40:.2f} scans/s")

  run_dir, export = os.path.join(work, "run"), os.path.join(work, "export")
  wall, peak, _ = run("train", [
      "-m", "ptychonet_tf.train", flagfile, f"--data_dir={local}",
      f"--model_dir={run_dir}", f"--export_dir={export}", "--epochs=1",
      f"--batch_size={FLAGS.batch_size}",
      f"--refine_steps={FLAGS.refine_steps}",
      f"--steps_per_epoch={FLAGS.train_steps}",
      f"--refine_steps_per_epoch={FLAGS.refine_train_steps}",
      "--eval_scans=1"], logs)
  row(f"train ({FLAGS.train_steps} + {FLAGS.refine_train_steps} steps, "
      f"batch {FLAGS.batch_size}, K={FLAGS.refine_steps}, export)", wall,
      peak)

  wall, peak, _ = run("evaluate", [
      "-m", "ptychonet_tf.evaluate", f"--data_dir={local}",
      f"--saved_model={export}", f"--out_dir={os.path.join(work, 'eval')}",
      f"--num_scans={FLAGS.eval_scans}",
      f"--dm_iterations={FLAGS.dm_iterations}", "--dm_equal_time=false"],
      logs)
  row(f"evaluate ({FLAGS.eval_scans} scan, DM-{FLAGS.dm_iterations})", wall,
      peak)

  import numpy as np  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  batch = next(iter(pipeline.make_dataset(local, "test", 1, shuffle=False)))
  scan_file = os.path.join(work, "scan.npy")
  np.save(scan_file, batch["amplitudes"].numpy().astype(np.float32))
  # TF Serving's layout: export/<version>/; serve the newest.
  version = max((d for d in os.listdir(export) if d.isdigit()), key=int)
  wall, peak, _ = run("saved_model_cli", [
      "-c", "import sys; from tensorflow.python.tools import saved_model_cli "
      "as m; sys.argv[0] = 'saved_model_cli'; m.main()", "run",
      "--dir", os.path.join(export, version), "--tag_set", "serve",
      "--signature_def",
      "serving_default", "--inputs", f"amplitudes={scan_file}",
      "--outdir", os.path.join(work, "served"), "--overwrite"], logs)
  row("saved_model_cli run (1 scan)", wall, peak)

  # The full run, projected from the steady-state figures above.
  full_scans = FULL["num_train"] + FULL["num_test"]
  epoch_patterns = FULL["num_train"] * n
  sim_s = full_scans / sim_rate
  train_s = FULL["epochs"] * epoch_patterns / train_rate
  refine_s = FULL["refine_steps"] * refine_step_s
  print(f"\nprojected full run of configs/dense.flags ({full_scans} scans, "
        f"{FULL['epochs']} epochs of {epoch_patterns} patterns, "
        f"{FULL['refine_steps']} end-to-end steps):")
  print(f"  this machine: simulation {hours(sim_s)} (local writer; Beam "
        f"{hours(full_scans / beam_rate) if beam_rate == beam_rate else 'n/a'}"
        f"), {full_scans * per_scan / 1e9:.1f} GB of shards; pattern epochs "
        f"{hours(train_s)} ({hours(train_s / FULL['epochs'])} each); "
        f"end-to-end epoch {hours(refine_s)}")
  if FLAGS.gpu_patterns_per_s > 0:
    for gpus in (1, 8):
      gtrain = FULL["epochs"] * epoch_patterns / (FLAGS.gpu_patterns_per_s *
                                                  gpus)
      grefine = FULL["refine_steps"] * FLAGS.gpu_refine_step_s / gpus
      print(f"  {gpus} GPU(s), linear scaling: pattern epochs "
            f"{hours(gtrain)}, end-to-end epoch {hours(grefine)}")
  else:
    print("  GPUs: pass bench_train's figures from a GPU machine "
          "(--gpu_patterns_per_s, --gpu_refine_step_s)")
  if not FLAGS.keep:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
