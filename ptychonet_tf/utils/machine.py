"""What machine a timing was taken on: the CPU model and its kernel flags."""
import os
import subprocess

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
