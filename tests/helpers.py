"""Helpers shared by the tests (the one module tests import helpers from).

- `REPO`, `SHARED_DATA`: paths;
- `run_cli(args, limits=, env=)`: `python ARGS...` from the repository root,
  as a fork of a process that has imported TensorFlow (tests/zygote.py), or
  in a fresh interpreter under PTYCHONET_TEST_FRESH=1 (`make test-release`);
- `assert_one_line_error(result, *fragments)`: a failed run that printed one
  `error: ...` line and no traceback;
- `snapshot(folder)`: every file under a folder, to show it stayed unchanged;
- `write_tiny(out)`: a tiny simulated dataset (16x16 probe, 10 positions),
  with the matching command-line flags `GEOMETRY_FLAGS` and a tiny network
  `SMALL_NET`;
- numpy references of the solvers' operators in the detector convention
  (float64): `np_far`, `np_inv_far`, `np_fourier_projection`, `np_windows`,
  `np_stitch`.
"""
import atexit
import hashlib
import os
import resource
import subprocess
import sys

import numpy as np

import zygote

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

GEOMETRY_FLAGS = ["--probe_size=16,16", "--scan=fermat", "--scan_count=10",
                  "--scan_step=1.5"]
SMALL_NET = ["--base_channels=4", "--depth=2"]


_ZYGOTE = None


def run_cli(args, timeout=300, limits=None, env=None):
  """Runs `python ARGS...` from the repo root; returns CompletedProcess (text).

  `limits`: {"as": bytes, "fsize": bytes} resource limits of the command;
  `env`: extra environment variables, read at TensorFlow's import (so the
  command runs in a fresh interpreter).
  """
  global _ZYGOTE
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  if env or os.environ.get("PTYCHONET_TEST_FRESH") == "1":
    full_env.update(env or {})
    resources = [(getattr(resource, zygote.LIMITS[k]), (v, v))
                 for k, v in (limits or {}).items()]

    def limit():
      for key, value in resources:
        resource.setrlimit(key, value)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)
  if _ZYGOTE is None:
    _ZYGOTE = zygote.Zygote(REPO, full_env)
    atexit.register(_ZYGOTE.close)
  return _ZYGOTE.run(args, REPO, full_env, timeout, limits)


def run_fresh_script(folder, source, args, timeout=300):
  """Runs the Python `source` with `args` in a fresh interpreter in
  `folder` (a pathlib.Path), outside the repository and without
  PYTHONPATH: plain TensorFlow, as a serving client would have it. Returns
  the CompletedProcess (text)."""
  script = folder / "fresh.py"
  script.write_text(source)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return subprocess.run([sys.executable, str(script), *args],
                        cwd=str(folder), env=env, capture_output=True,
                        text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
  """The process failed with a single `error: ...` line naming `fragments`."""
  assert result.returncode != 0, result.stdout + result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert "Traceback" not in result.stderr, result.stderr
  assert lines and lines[-1].startswith("error: "), result.stderr
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


def snapshot(folder):
  """{path relative to folder: sha256} of every file under `folder`."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def write_tiny(out, num_train=8, num_test=2, num_shards=2):
  """A tiny dataset in `out` (GEOMETRY_FLAGS' geometry), written in-process."""
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import geometry as geometry_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import simulator  # pylint: disable=g-import-not-at-top
  sim = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(16, 16)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)))
  config = writer.WriteConfig(simulation=sim, num_train=num_train,
                              num_test=num_test, num_shards=num_shards)
  writer.write_dataset(config, out, workers=1, progress=False)
  return out


# --- numpy references of the solvers' operators (detector convention) -------


def np_far(x):
  """Unitary far field, zero frequency at the centre."""
  h, w = x.shape[-2:]
  return np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1)) / np.sqrt(h * w)


def np_inv_far(x):
  h, w = x.shape[-2:]
  return np.fft.ifft2(np.fft.ifftshift(x, axes=(-2, -1))) * np.sqrt(h * w)


def np_fourier_projection(psi, amps):
  """Modulus replacement; a spectrum that is exactly 0 stays 0."""
  spec = np_far(psi)
  mag = np.abs(spec)
  scale = np.divide(amps, mag, out=np.zeros_like(mag), where=mag > 0)
  return np_inv_far(spec * scale)


def np_windows(obj, layout):
  return np.stack([obj[t:b, l:r] for t, b, l, r in layout])


def np_stitch(patches, layout, shape):
  out = np.zeros(shape, patches.dtype)
  for patch, (t, b, l, r) in zip(patches, layout):
    out[t:b, l:r] += patch
  return out


def np_overlap(psi, probe, layout, shape, previous, inertia):
  """The inertia-regularised object of exit waves (DM's overlap projection)."""
  num = np_stitch(np.conj(probe) * psi, layout, shape)
  norm = np_stitch(np.broadcast_to(np.abs(probe) ** 2, psi.shape), layout,
                   shape)
  eps = inertia * norm.max()
  return (num + eps * previous) / (norm + eps)
