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


def set_threads(threads):
  """Caps TensorFlow's CPU thread pools at `threads` (0 keeps its default).

  Sets the intra-op pool (the threads one op, e.g. a batched FFT or an
  XLA-compiled solver loop, splits its work over) and the inter-op pool (the
  ops run side by side) to `threads` each. Call it before TensorFlow runs any
  op; entry points call it from their --threads flag. Pinning a process to
  cores (`taskset -c 0 ...`) has the same effect from outside.

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
