"""The machine: the CPU a timing was taken on, and TensorFlow's thread count."""
import os
import subprocess

from ptychonet_tf.utils.errors import UserError

# CPU flags that decide TensorFlow's CPU kernels (oneDNN, bfloat16 paths).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description():
  """One line: lscpu's model name, the core count and which CPU_FLAGS it has.

  e.g. "AMD EPYC, 2 cores; flags: avx2 fma avx512f avx512_bf16 no-amx_bf16".
  """
  try:
    text = subprocess.run(["lscpu"], capture_output=True, text=True,
                          check=False, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return f"unknown CPU (lscpu not available), {os.cpu_count()} cores"
  fields = {}
  for line in text.splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields[key.strip()] = value.strip()
  have = set(fields.get("Flags", "").split())
  return (f"{fields.get('Model name', 'unknown CPU')}, {os.cpu_count()} cores; "
          f"flags: " + " ".join(f if f in have else f"no-{f}"
                                for f in CPU_FLAGS))


def cpu_flags():
  """The CPU's feature flags (/proc/cpuinfo), an empty set where unknown."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.partition(":")[2].split())
  except OSError:
    pass
  return set()


def fast_policy():
  """The Keras dtype policy convolutions run fastest in on this CPU:
  "mixed_bfloat16" where it computes bfloat16 natively (AVX512-BF16 or
  AMX-BF16; several times faster than float32 there), else "float32"."""
  return ("mixed_bfloat16" if cpu_flags() & {"avx512_bf16", "amx_bf16"}
          else "float32")


def usable_cores():
  """The cores this process may run on (its CPU affinity, e.g. from taskset)."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def pin_to_cores(count):
  """Restricts the process to the first `count` of its usable cores.

  Every thread that exists now is moved, and threads started later (e.g.
  TensorFlow's pools) inherit the setting: `taskset -c 0` from inside. A
  no-op where the OS offers no CPU affinity or `count` covers every core.

  Returns:
    The cores the process now runs on.
  """
  cores = usable_cores()
  if count >= len(cores) or not hasattr(os, "sched_setaffinity"):
    return cores
  chosen = set(cores[:count])
  try:
    tids = [int(t) for t in os.listdir("/proc/self/task")]
  except OSError:
    tids = [0]  # this thread; later ones inherit it
  for tid in tids:
    try:
      os.sched_setaffinity(tid, chosen)
    except OSError:  # a thread that ended meanwhile
      pass
  return sorted(chosen)


def set_threads(threads):
  """Runs TensorFlow on `threads` cores (0 keeps its default: all of them).

  Sets the intra-op pool (the threads one op, e.g. a batched FFT or an
  XLA-compiled solver loop, splits its work over) and the inter-op pool (the
  ops run side by side) to `threads` each, and pins the process to its first
  `threads` usable cores (`pin_to_cores`), so that `--threads=1` is the same
  as `taskset -c 0 ... --threads=1`: a thread the OS moves between cores
  ran a sequential solver (ePIE) 2-25% slower on the 2-core machine
  (docs/baselines.md, Speed). Call it before TensorFlow runs any op; entry
  points call it from their --threads flag.

  Raises:
    UserError: threads < 0, or TensorFlow already started its pools.
  """
  if threads < 0:
    raise UserError(f"--threads={threads} must be >= 0 (0: all cores)")
  if not threads:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError as e:
    raise UserError(f"--threads={threads} came after TensorFlow started its "
                    f"thread pools ({e})") from e
  pin_to_cores(threads)
