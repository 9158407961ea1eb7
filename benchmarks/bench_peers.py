r"""This package's solvers against pty-chi's and PtyLab's, on the same scans.

  python benchmarks/bench_peers.py --peer_python=../peers_env/bin/python \
      [--configs=small_dense,dense] [--psnr_configs=small_dense] \
      [--iterations=300] [--timing_iterations=20] [--warmup_iterations=5] \
      [--threads=1,2] [--solvers=dm,epie,lsqml,ptychi_dm,ptychi_lsqml,ptylab_epie]

Short run: --configs=small_dense --iterations=50 --timing_iterations=10.

The peers live in their own virtual environment (no TensorFlow in it, no
PyTorch in the project's):

  python3 -m venv ../peers_env
  ../peers_env/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  ../peers_env/bin/pip install ptychi==2.2.0 ptylab==0.3.7

(the first install is optional: the CPU-only wheel of PyTorch, much smaller
than the default one). --peer_python defaults to $PTYCHONET_PEER_PYTHON;
without either, the peers' rows are skipped with a one-line note.

For each config (configs/<name>.flags, or a path to a .flags file) it
simulates one noise-free scan from two images of the embedded default pool
(skimage; `physics.simulator.random_object`, seeded by --seed), writes it to a
temporary scan file (docs/scan_format.md) and runs every solver on it in a
fresh process of benchmarks/peers_worker.py, once per --threads count: this
package's DM, ePIE and LSQML (when ptychonet_tf.baselines.lsqml exists) under
this interpreter, pty-chi's DM and LSQML (PyTorch, CPU) and PtyLab's ePIE
(numpy) under --peer_python. The worker converts the scan to each peer's
conventions (its docstring lists them). All solve the same task: known probe,
flat start, no probe or position refinement; the LSQMLs both use mini-batches
of --lsqml_batch_size positions spread over the scan; both ePIEs step with
alpha = 1.

- s/it: steady-state wall seconds per iteration (ePIE: per epoch), the
  --timing_iterations after --warmup_iterations (tracing, compilation and
  first-epoch set-up left out). A process with n threads is pinned to n CPUs
  (`taskset` style) and each library is told to use n threads.
- PSNR (configs in --psnr_configs): amplitude / phase PSNR in dB after
  --iterations, from the run with the most threads, by
  `evaluation.metrics.complex_metrics` (constant phase offset removed) over
  `metrics.illuminated_region` of the scan.

It prints the CPU first, then a Markdown table (one row per solver), the
speed-up of each of our solvers over its peer (the peer's s/it / ours, same
run) and notes on skipped rows.
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np

from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "peers_worker.py")
PEER_PYTHON_ENV = "PTYCHONET_PEER_PYTHON"
SKIP_STATUS = 3  # peers_worker.SKIP_STATUS
WORKER_TIMEOUT = 3600  # seconds for one solver run
# Flag value -> (library, method, whose), in table order.
SOLVERS = {
    "dm": ("ptychonet_tf", "DM", "ours"),
    "epie": ("ptychonet_tf", "ePIE", "ours"),
    "lsqml": ("ptychonet_tf", "LSQML", "ours"),
    "ptychi_dm": ("pty-chi", "DM", "peer"),
    "ptychi_lsqml": ("pty-chi", "LSQML", "peer"),
    "ptylab_epie": ("PtyLab", "ePIE", "peer"),
}
# (ours, its peer) for the speed-up lines.
PAIRS = (("dm", "ptychi_dm"), ("epie", "ptylab_epie"),
         ("lsqml", "ptychi_lsqml"))

flags.DEFINE_list("configs", ["small_dense", "dense"],
                  "Config names under configs/ (or paths to .flags files).")
flags.DEFINE_list("psnr_configs", ["small_dense"],
                  "Those of --configs whose PSNR after --iterations is "
                  "measured (others are only timed).")
flags.DEFINE_integer("iterations", 300, "Iterations (epochs) of the PSNR runs.")
flags.DEFINE_integer("timing_iterations", 20,
                     "Iterations (epochs) timed per run, after the warm-up.")
flags.DEFINE_integer("warmup_iterations", 5,
                     "Iterations (epochs) run before the clock starts.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts, one run each.")
flags.DEFINE_list("solvers", list(SOLVERS), "Rows of the table.")
flags.DEFINE_string("peer_python", None,
                    f"Interpreter of the peers' environment (pty-chi, "
                    f"PtyLab); default ${PEER_PYTHON_ENV}; unset: the peers' "
                    f"rows are skipped.")
flags.DEFINE_integer("lsqml_batch_size", 10,
                     "Positions per mini-batch of both LSQMLs.")
flags.DEFINE_integer("seed", 0, "Seed of the simulated objects.")
FLAGS = flags.FLAGS


def is_ours(solver):
  return SOLVERS[solver][2] == "ours"


def short_name(solver):
  """e.g. "pty-chi LSQML"."""
  library, method, _ = SOLVERS[solver]
  return f"{library} {method}"


def row_label(solver, version=None, backend=None):
  """e.g. "pty-chi 2.2.0 LSQML (PyTorch 2.14.1)"; ours without a version."""
  library, method, _ = SOLVERS[solver]
  label = " ".join(p for p in (library, version, method) if p)
  return f"{label} ({backend})" if backend else label


def config_path(name):
  """configs/<name>.flags, or `name` itself when it is a path."""
  if name.endswith(".flags") or os.sep in name:
    path = os.path.abspath(name)
  else:
    path = os.path.join(REPO, "configs", f"{name}.flags")
  if not os.path.isfile(path):
    raise UserError(f"config {name!r} has no file {path}")
  return path


def config_name(name):
  return os.path.splitext(os.path.basename(name))[0]


def check_options():
  """Validates the flags; returns (thread counts, peer python or None)."""
  if not FLAGS.configs:
    raise UserError("--configs is empty; expected config names, e.g. "
                    "small_dense,dense")
  for name in FLAGS.configs:
    config_path(name)
  unknown = [s for s in FLAGS.solvers if s not in SOLVERS]
  if unknown or not FLAGS.solvers:
    raise UserError(f"--solvers={','.join(FLAGS.solvers)}: expected some of "
                    f"{','.join(SOLVERS)}")
  try:
    threads = sorted({int(t) for t in FLAGS.threads})
  except ValueError:
    threads = []
  cpus = len(machine.usable_cores())
  if not threads or threads[0] < 1 or threads[-1] > cpus:
    raise UserError(f"--threads={','.join(FLAGS.threads)} must be integers "
                    f"from 1 to {cpus} (the CPUs this process may use)")
  if FLAGS.warmup_iterations < 1 or FLAGS.timing_iterations < 1:
    raise UserError(f"--warmup_iterations={FLAGS.warmup_iterations} and "
                    f"--timing_iterations={FLAGS.timing_iterations} must be "
                    f">= 1")
  timed = FLAGS.warmup_iterations + FLAGS.timing_iterations
  if psnr_configs() and FLAGS.iterations < timed:
    raise UserError(f"--iterations={FLAGS.iterations} must be >= "
                    f"--warmup_iterations + --timing_iterations = {timed} "
                    f"(the PSNR runs are timed too), or pass --psnr_configs=")
  if FLAGS.lsqml_batch_size < 1:
    raise UserError(f"--lsqml_batch_size={FLAGS.lsqml_batch_size} must be >= 1")
  peer_python = FLAGS.peer_python or os.environ.get(PEER_PYTHON_ENV) or None
  if peer_python and not (os.path.isfile(peer_python) and
                          os.access(peer_python, os.X_OK)):
    raise UserError(f"--peer_python={peer_python} is not an executable file; "
                    f"expected the python of the peers' environment, e.g. "
                    f"../peers_env/bin/python (docs/baselines.md, Against "
                    f"peers)")
  return threads, peer_python


def psnr_configs():
  names = {config_name(n) for n in FLAGS.psnr_configs}
  return [config_name(n) for n in FLAGS.configs if config_name(n) in names]


# --- Scans -----------------------------------------------------------------


def config_values(name):
  """{flag: value} of a config's flagfile, includes expanded by absl."""
  path = config_path(name)
  cwd = os.getcwd()
  os.chdir(REPO)  # flagfiles include configs/base.flags relative to the repo
  try:
    args = FLAGS.read_flags_from_files([f"--flagfile={path}"],
                                       force_gnu=True)
  finally:
    os.chdir(cwd)
  values = {}
  for arg in args:
    key, sep, value = arg.lstrip("-").partition("=")
    if sep:
      values[key] = value
  return values


def make_scan(name, seed):
  """The noise-free scan of a config: a `data.scanfile.Scan` with its object."""
  # Imported here, so that bad flags are reported before TensorFlow starts.
  from ptychonet_tf.data import images  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import scanfile  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import geometry as geometry_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import objects  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import simulator  # pylint: disable=g-import-not-at-top
  values = config_values(name)
  scan_defaults = geometry_lib.ScanConfig()
  probe_defaults = geometry_lib.ProbeConfig()
  object_defaults = objects.ObjectConfig()

  def get(key, default):
    return type(default)(values.get(key, default))

  try:
    size = tuple(int(s) for s in values.get("probe_size", "64,64").split(","))
    size = size * 2 if len(size) == 1 else size
    geometry = geometry_lib.make_geometry(geometry_lib.GeometryConfig(
        probe=geometry_lib.ProbeConfig(
            size=size, kind=get("probe_kind", probe_defaults.kind),
            diameter=get("probe_diameter", probe_defaults.diameter),
            file=values.get("probe_file") or None),
        scan=geometry_lib.ScanConfig(
            pattern=get("scan", scan_defaults.pattern),
            count=get("scan_count", scan_defaults.count),
            step=get("scan_step", scan_defaults.step),
            rows=get("mesh_rows", scan_defaults.rows),
            cols=get("mesh_cols", scan_defaults.cols),
            every=get("mesh_every", scan_defaults.every),
            rings=get("circle_rings", scan_defaults.rings),
            margin=get("scan_margin", scan_defaults.margin))))
    object_config = objects.ObjectConfig(
        amp_min=get("amp_min", object_defaults.amp_min),
        amp_max=get("amp_max", object_defaults.amp_max),
        phase_min=get("phase_min", object_defaults.phase_min),
        phase_max=get("phase_max", object_defaults.phase_max),
        mode=get("object_mode", object_defaults.mode),
        constant_amplitude=get("constant_amplitude",
                               object_defaults.constant_amplitude))
  except ValueError as e:
    raise UserError(f"config {name!r}: a geometry or object flag is not a "
                    f"number ({e})")
  train, _ = images.open_image_pools("default")
  obj = simulator.random_object(train, geometry.object_shape, object_config,
                                simulator.scan_rng(seed, "test", 0),
                                images.load_image)
  amplitudes = forward.diffraction_amplitudes(obj, geometry.probe,
                                              geometry.layout).numpy()
  return scanfile.Scan(amplitudes=amplitudes, layout=geometry.layout,
                       probe=geometry.probe,
                       object_shape=geometry.object_shape, object=obj)


def scan_title(name, scan):
  count, h, w = scan.amplitudes.shape
  size = f"{h}^2" if h == w else f"{h}x{w}"
  return f"{name} ({count} x {size})"


# --- Runs ------------------------------------------------------------------


def worker_env(threads, ours):
  """The worker's environment: thread variables; the project on the path
  for our solvers, no PYTHONPATH for the peers' interpreter."""
  env = dict(os.environ)
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    env[var] = str(threads)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env.pop("PYTHONPATH", None)
  if ours:
    import ptychonet_tf  # pylint: disable=g-import-not-at-top
    root = os.path.dirname(os.path.dirname(os.path.abspath(
        ptychonet_tf.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                  else []))
  return env


def run_solver(solver, scan_path, out_path, iterations, threads, python):
  """Runs one solver in a worker process.

  Returns:
    ("ok", {object, seconds_per_iteration, version, backend}), ("skip",
    reason) or ("failed", the last line of its output).
  """
  command = [python, WORKER, f"--solver={solver}", f"--scan={scan_path}",
             f"--out={out_path}", f"--iterations={iterations}",
             f"--warmup={FLAGS.warmup_iterations}",
             f"--timed={FLAGS.timing_iterations}", f"--threads={threads}",
             f"--lsqml_batch_size={FLAGS.lsqml_batch_size}"]
  try:
    result = subprocess.run(command, env=worker_env(threads, is_ours(solver)),
                            cwd=REPO, capture_output=True, text=True,
                            timeout=WORKER_TIMEOUT, check=False)
  except subprocess.TimeoutExpired:
    return "failed", f"no result after {WORKER_TIMEOUT} s"
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  if result.returncode == SKIP_STATUS:
    return "skip", lines[-1].replace("skip: ", "", 1) if lines else "skipped"
  if result.returncode != 0:
    return "failed", (f"exit status {result.returncode}: "
                      f"{lines[-1] if lines else 'no message'}")
  with np.load(out_path) as f:
    return "ok", dict(object=f["object"],
                      seconds_per_iteration=float(f["seconds_per_iteration"]),
                      version=str(f["version"]), backend=str(f["backend"]))


def psnr(scan, obj):
  """(amplitude, phase) PSNR in dB of obj on the scan's illuminated region."""
  from ptychonet_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  mask = metrics.illuminated_region(scan.layout, scan.object_shape, scan.probe)
  figures = metrics.complex_metrics(obj, scan.object, mask)
  return figures["amplitude_psnr"], figures["phase_psnr"]


def log(text):
  print(text, file=sys.stderr, flush=True)


# --- The table -------------------------------------------------------------


def fmt_seconds(seconds):
  return "–" if seconds is None else f"{seconds:.4g}"


def fmt_psnr(pair):
  return "–" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f}"


def thread_counts(threads):
  """e.g. "1 / 2 threads", "1 thread"."""
  unit = "thread" if threads == [1] else "threads"
  return f"{' / '.join(str(t) for t in threads)} {unit}"


def table(rows, titles, threads, psnr_names, iterations):
  """The Markdown table, as lines.

  Args:
    rows: [(label, {config: {threads: s/it or None}}, {config: (amplitude,
      phase) PSNR or None})].
    titles: [(config, column title)] in column order.
    threads: thread counts, ascending.
    psnr_names: configs of the PSNR column (none: no column).
    iterations: iterations of the PSNR runs.
  """
  header = ["solver"] + [f"{title} s/it, {thread_counts(threads)}"
                         for _, title in titles]
  if psnr_names:
    header.append(f"amp / phase PSNR (dB) after {iterations} "
                  f"({'; '.join(psnr_names)})")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, seconds, psnrs in rows:
    cells = [label]
    for name, _ in titles:
      cells.append(" / ".join(fmt_seconds(seconds.get(name, {}).get(t))
                              for t in threads))
    if psnr_names:
      cells.append("; ".join(fmt_psnr(psnrs.get(n)) for n in psnr_names))
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def speedups(timings, names, threads):
  """One line per (ours, peer) pair that both ran: the peer's s/it / ours.

  Args:
    timings: {(config, solver): {threads: s/it or None}}.
    names: configs in column order.
    threads: thread counts, ascending.
  """
  lines = []
  for ours, peer in PAIRS:
    parts = []
    for name in names:
      mine = timings.get((name, ours), {})
      theirs = timings.get((name, peer), {})
      ratios = [f"{theirs[t] / mine[t]:.2f}x" if mine.get(t) and theirs.get(t)
                else "–" for t in threads]
      if any(r != "–" for r in ratios):
        parts.append(f"{name} {' / '.join(ratios)}")
    if parts:
      lines.append(f"- {short_name(ours)} vs {short_name(peer)} (the peer's "
                   f"s/it / ours, {thread_counts(threads)}): " +
                   "; ".join(parts))
  return lines


# --- Main ------------------------------------------------------------------


class Results:
  """What the runs gave: timings, PSNRs, versions, skips and failures."""

  def __init__(self):
    self.timings = {}  # (config, solver) -> {threads: s/it or None}
    self.psnrs = {}  # (config, solver) -> (amplitude, phase) dB
    self.versions = {}  # solver -> (version, backend)
    self.skips = {}  # (solver, reason) -> [config]
    self.failures = []  # note lines

  def ran(self, solver):
    return any(s == solver for _, s in self.timings)


def bench_config(flag_name, name, solvers, threads, peer_python, tmp, results):
  """Simulates a config's scan and runs every solver on it; returns its
  column title."""
  scan = make_scan(flag_name, FLAGS.seed)
  scan_path = os.path.join(tmp, f"{name}.npz")
  scan.save(scan_path)
  title = scan_title(name, scan)
  log(f"{title}: object {scan.object_shape[0]}x{scan.object_shape[1]}")
  for solver in solvers:
    python = sys.executable if is_ours(solver) else peer_python
    for count in threads:
      with_psnr = name in psnr_configs() and count == threads[-1]
      iterations = (FLAGS.iterations if with_psnr else
                    FLAGS.warmup_iterations + FLAGS.timing_iterations)
      status, value = run_solver(solver, scan_path,
                                 os.path.join(tmp, "result.npz"), iterations,
                                 count, python)
      if status == "skip":
        results.skips.setdefault((solver, value), []).append(name)
        break
      seconds = None
      if status == "failed":
        results.failures.append(f"{short_name(solver)} failed on {name} with "
                                f"{count} threads: {value}")
      else:
        seconds = value["seconds_per_iteration"]
        results.versions[solver] = (value["version"], value["backend"])
      results.timings.setdefault((name, solver), {})[count] = seconds
      text = f"  {short_name(solver):20s} {count} thread(s): " + (
          "failed" if seconds is None else f"{seconds:.4g} s/it")
      if with_psnr and seconds is not None:
        results.psnrs[(name, solver)] = psnr(scan, value["object"])
        text += (f", PSNR after {iterations}: "
                 f"{fmt_psnr(results.psnrs[(name, solver)])} dB")
      log(text)
  return title


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  threads, peer_python = check_options()
  names = [config_name(n) for n in FLAGS.configs]
  print(f"CPU: {machine.cpu_description()}", flush=True)
  notes = []
  solvers = [s for s in SOLVERS if s in FLAGS.solvers]
  if peer_python is None and not all(is_ours(s) for s in solvers):
    notes.append(f"peer rows skipped: no --peer_python (or "
                 f"${PEER_PYTHON_ENV}); install the peers with the command "
                 f"in docs/baselines.md (Against peers)")
    solvers = [s for s in solvers if is_ours(s)]
  results, titles = Results(), []
  with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
    for flag_name, name in zip(FLAGS.configs, names):
      titles.append((name, bench_config(flag_name, name, solvers, threads,
                                         peer_python, tmp, results)))
  rows = [(row_label(s, *results.versions.get(s, ())),
           {n: results.timings.get((n, s), {}) for n in names},
           {n: results.psnrs.get((n, s)) for n in psnr_configs()})
          for s in solvers if results.ran(s)]
  print(f"\nNoise-free scans, known probe, flat start; s/it: steady state "
        f"over {FLAGS.timing_iterations} iterations (ePIE: epochs) after "
        f"{FLAGS.warmup_iterations}; LSQML mini-batches of "
        f"{FLAGS.lsqml_batch_size} positions; PSNR on the illuminated "
        f"region, phase offset removed.\n")
  print("\n".join(table(rows, titles, threads, psnr_configs(),
                        FLAGS.iterations)))
  lines = speedups(results.timings, names, threads)
  if lines:
    print("\nSpeed-ups, same run:")
    print("\n".join(lines))
  notes += [f"{short_name(s)} skipped ({', '.join(on)}): {reason}"
            for (s, reason), on in results.skips.items()] + results.failures
  if notes:
    print("\nNotes:")
    print("\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
  app.run(main)
