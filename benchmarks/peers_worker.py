r"""Runs one ptychography solver, ours or a peer's, on a scan file and times it.

benchmarks/bench_peers.py starts this script once per (scan, solver, thread
count), each in a fresh process so that its thread settings hold from the
start:

  python benchmarks/peers_worker.py --solver=ptychi_lsqml --scan=scan.npz \
      --out=result.npz --iterations=300 --warmup=5 --timed=20 --threads=1

Only numpy is imported at the top: the peers' rows run under the peers'
interpreter (pty-chi and PtyLab installed, no TensorFlow), ours under the
project's, and each solver imports its library when it runs. It uses argparse
rather than absl for the same reason. Solvers (`SOLVERS`):

  dm, epie, lsqml             ptychonet_tf.baselines (TensorFlow)
  ptychi_dm, ptychi_lsqml     pty-chi (PyTorch, CPU)
  ptylab_epie                 PtyLab (numpy)

Every run has the same task: known probe (never refined), flat start (object
1 everywhere), positions fixed, noise-free amplitudes. It runs --warmup
iterations (epochs), then --timed iterations with the clock running, then the
rest up to --iterations, and writes --out (.npz): `object` complex64 [H, W] in
the scan's object frame, `seconds_per_iteration` (wall time of the timed
iterations / --timed), `version` (of the peer's library; "" for ours),
`backend` (e.g. "PyTorch 2.14.1") and `threads`.

Threads: the process pins itself to --threads CPUs (os.sched_setaffinity, what
`taskset -c 0` does for one) and tells its library to use that many threads
(TensorFlow's intra- and inter-op pools, torch.set_num_threads); the caller
sets OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS before the start.

Exit status 3 with one line `skip: <reason>` on stderr: the solver cannot run
here (its library is not installed, or the scan does not suit it); the
benchmark leaves its row out. Other failures exit 1 with a traceback.

Data conventions (ours: docs/scan_format.md):

- ptychonet_tf: amplitudes A_j = |fftshift(fft2(P O_j))| / sqrt(h w), zero
  frequency at (h//2, w//2); layout rows (top, bottom, left, right) of each
  window in the object.
- pty-chi 2.2 (`ptychi_inputs`): intensities as a detector counts them for
  its forward model |fft2(P O_j)|^2 with the unnormalised FFT. With
  `data_options.fft_shift=False` they are passed with zero frequency at
  (0, 0): I_j = ifftshift(A_j^2 h w). Positions are the windows' centres
  relative to an origin: pty-chi cuts the window whose top-left pixel is
  pos + origin - (h-1)/2 and shifts the probe by the subpixel part
  pos - round(pos). Integer positions pos = top - t0 with the SPECIFIED
  origin t0 + (h-1)/2 give our windows exactly, with no shift.
- PtyLab 0.3.7 (`ptylab_inputs`): intensities of the unitary ("ortho") FFT
  with zero frequency at the centre, so the ptychogram is A_j^2. Positions
  are an encoder (row, col) in metres: the window's top-left pixel in its
  square No x No object is round(encoder / dxo) + No//2 - Np//2, with
  dxo = wavelength zo / (Np dxd). Our object is the block of rows
  (No//2 - Np//2 - t0) ... + H (columns likewise) of its object.
"""
import argparse
import importlib
import math
import os
import sys
import time

import numpy as np

OURS = ("dm", "epie", "lsqml")
PEERS = ("ptychi_dm", "ptychi_lsqml", "ptylab_epie")
SOLVERS = OURS + PEERS
SKIP_STATUS = 3
# PtyLab's optics: any values do; together they set only its pixel size dxo.
PTYLAB_WAVELENGTH, PTYLAB_ZO, PTYLAB_DXD = 1e-9, 0.05, 75e-6


class Unsupported(Exception):
  """The solver cannot run here; the message says why (one line)."""


# --- Conventions -----------------------------------------------------------


def centre_offset(object_shape, probe_shape):
  """(t0, l0): the window corner the peers' positions count from.

  The corner of a window centred in the object, so that the positions given
  to pty-chi and PtyLab are about zero-centred, as both expect.
  """
  return ((int(object_shape[0]) - int(probe_shape[0])) // 2,
          (int(object_shape[1]) - int(probe_shape[1])) // 2)


def ptychi_inputs(amplitudes, layout, object_shape):
  """A scan in pty-chi's conventions (see the module docstring).

  Args:
    amplitudes: float [N, h, w], detector convention (zero frequency at
      (h//2, w//2), unitary DFT).
    layout: int [N, 4] (top, bottom, left, right).
    object_shape: (H, W).

  Returns:
    (intensities float32 [N, h, w] with zero frequency at (0, 0) for
     `fft_shift=False`, pos_y float32 [N], pos_x float32 [N], origin
     (y, x) floats for `position_origin_coords`).
  """
  amplitudes = np.asarray(amplitudes, np.float64)
  layout = np.asarray(layout)
  h, w = amplitudes.shape[-2:]
  intensities = np.fft.ifftshift(np.square(amplitudes) * (h * w),
                                 axes=(-2, -1)).astype(np.float32)
  t0, l0 = centre_offset(object_shape, (h, w))
  pos_y = (layout[:, 0] - t0).astype(np.float32)
  pos_x = (layout[:, 2] - l0).astype(np.float32)
  return intensities, pos_y, pos_x, (t0 + (h - 1) / 2.0, l0 + (w - 1) / 2.0)


def ptylab_inputs(amplitudes, layout, object_shape):
  """A scan in PtyLab's conventions (see the module docstring).

  Args:
    amplitudes: float [N, n, n] (PtyLab's detector is square).
    layout: int [N, 4].
    object_shape: (H, W).

  Returns:
    (ptychogram float32 [N, n, n] (zero frequency at the centre), encoder
     float64 [N, 2] (row, col) in metres, dxo in metres).

  Raises:
    Unsupported: the patterns are not square.
  """
  amplitudes = np.asarray(amplitudes, np.float32)
  n, h, w = amplitudes.shape
  if h != w:
    raise Unsupported(f"PtyLab needs square diffraction patterns, not {h}x{w}")
  dxo = PTYLAB_WAVELENGTH * PTYLAB_ZO / (h * PTYLAB_DXD)
  t0, l0 = centre_offset(object_shape, (h, w))
  layout = np.asarray(layout)
  encoder = np.stack([layout[:, 0] - t0, layout[:, 2] - l0], 1) * dxo
  return np.square(amplitudes), encoder.astype(np.float64), dxo


def ptylab_object_size(default, object_shape, probe_size):
  """PtyLab's object size No: its `default`, enlarged (kept even) until our
  object frame fits inside at `ptylab_frame`."""
  size = int(default)
  while True:
    top, left = ptylab_frame(size, object_shape, probe_size)
    if (min(top, left) >= 0 and top + object_shape[0] <= size and
        left + object_shape[1] <= size):
      return size
    size += 2


def ptylab_frame(size, object_shape, probe_size):
  """(row, col) of our object's pixel (0, 0) in PtyLab's No x No object."""
  t0, l0 = centre_offset(object_shape, (probe_size, probe_size))
  return size // 2 - probe_size // 2 - t0, size // 2 - probe_size // 2 - l0


# --- Threads ---------------------------------------------------------------


def pin_threads(threads):
  """Pins this process to `threads` of its CPUs (where the OS allows it)."""
  if hasattr(os, "sched_setaffinity"):
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:threads])


# --- The solvers -----------------------------------------------------------
# Each returns (object complex [H, W] in the scan's frame, stamps {iterations
# done: time.perf_counter()}, (library version or "", backend)); stamps hold
# at least the ends of the warm-up and of the timed iterations.


def run_ours(method, scan, args):
  """ptychonet_tf's DM, ePIE or LSQML (`method`) in TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  # Chunk boundaries (where the monitor reads the clock) fall at the end of
  # the warm-up and of the timed iterations.
  chunk = math.gcd(args.warmup, args.timed)
  inputs = (scan["amplitudes"], scan["probe"], scan["layout"],
            scan["object_shape"])
  try:
    reconstructors = importlib.import_module("ptychonet_tf.reconstructors")
  except ModuleNotFoundError:
    raise Unsupported("ptychonet_tf.reconstructors is not in this tree")
  if method not in reconstructors.NAMES:
    raise Unsupported(f"ptychonet_tf has no {method} in this tree")
  settings = dict(iterations=args.iterations, chunk=chunk, progress=False,
                  batch_size=args.lsqml_batch_size)
  if method == "epie":
    settings["alpha"] = args.epie_alpha
  solver = reconstructors.build(method, *inputs,
                                reconstructors.configure(method, **settings))
  stamps = {}
  result = solver.run(
      monitor=lambda done, _: stamps.setdefault(done, time.perf_counter()))
  return result.object, stamps, ("", f"TensorFlow {tf.__version__}")


def run_ptychi(method, scan, args):
  """pty-chi's DM or LSQML (`method`) on the CPU."""
  try:
    import ptychi  # pylint: disable=g-import-not-at-top
    from ptychi import api  # pylint: disable=g-import-not-at-top
    from ptychi.api.task import PtychographyTask  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise Unsupported(f"pty-chi is not installed for {sys.executable} ({e})")
  torch.set_num_threads(args.threads)
  try:
    torch.set_num_interop_threads(args.threads)
  except RuntimeError:  # the inter-op pool already started; it stays as is
    pass
  amplitudes, layout = scan["amplitudes"], scan["layout"]
  big_h, big_w = scan["object_shape"]
  intensities, pos_y, pos_x, origin = ptychi_inputs(amplitudes, layout,
                                                    (big_h, big_w))
  if method == "lsqml":
    options = api.LSQMLOptions()
    rec = options.reconstructor_options
    rec.batch_size = args.lsqml_batch_size
    # PtychoShelves' "sparse" batches, as ptychonet_tf's LSQML groups them.
    rec.batching_mode = api.BatchingModes.UNIFORM
    # The probe is known: no intensity rescaling in the first epoch.
    rec.rescale_probe_intensity_in_first_epoch = False
  else:
    options = api.DMOptions()
    rec = options.reconstructor_options
    # All positions in one vectorised chunk (the default, 1, loops over them).
    rec.chunk_length = len(layout)
  rec.default_device = api.Devices.CPU
  rec.num_epochs = args.iterations
  rec.random_seed = 0
  rec.displayed_loss_function = None
  options.data_options.fft_shift = False
  obj_options = options.object_options
  obj_options.determine_position_origin_coords_by = (
      api.ObjectPosOriginCoordsMethods.SPECIFIED)
  obj_options.position_origin_coords = list(origin)
  # The probe is known, so its scale too: no object/probe rescaling.
  obj_options.remove_object_probe_ambiguity.enabled = False
  options.probe_options.optimizable = False
  options.probe_position_options.optimizable = False
  task = PtychographyTask(
      options, diffraction_data=intensities,
      object_data=np.ones((1, big_h, big_w), np.complex64),
      probe_data=scan["probe"][None, None].astype(np.complex64),
      probe_position_x_px=pos_x, probe_position_y_px=pos_y)
  stamps, done = {}, 0
  for num in (args.warmup, args.timed, args.iterations - args.warmup -
              args.timed):
    if num > 0:
      task.run(num)
      done += num
      stamps[done] = time.perf_counter()
  obj = task.get_data_to_cpu("object", as_numpy=True)[0]
  return obj, stamps, (ptychi.__version__, f"PyTorch {torch.__version__}")


def run_ptylab(scan, args):
  """PtyLab's ePIE (numpy, CPU)."""
  try:
    import PtyLab  # pylint: disable=g-import-not-at-top
    from PtyLab import Engines  # pylint: disable=g-import-not-at-top
    from importlib import metadata  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise Unsupported(f"PtyLab is not installed for {sys.executable} ({e})")
  layout, probe = scan["layout"], scan["probe"]
  object_shape = tuple(int(s) for s in scan["object_shape"])
  ptychogram, encoder, _ = ptylab_inputs(scan["amplitudes"], layout,
                                         object_shape)
  np.random.seed(0)
  data = PtyLab.ExperimentalData(None, "CPM")
  data.ptychogram, data.encoder = ptychogram, encoder
  data.wavelength, data.zo, data.dxd = PTYLAB_WAVELENGTH, PTYLAB_ZO, PTYLAB_DXD
  data.entrancePupilDiameter = data.spectralDensity = None
  data.theta = data.emptyBeam = None
  data._setData()  # pylint: disable=protected-access
  params = PtyLab.Params()
  params.gpuSwitch = False
  # Plain fft2 on ifftshifted data: PtyLab's fast far-field path.
  params.fftshiftSwitch = True
  rec = PtyLab.Reconstruction(data, params)
  size = probe.shape[0]
  rec.No = ptylab_object_size(rec.No, object_shape, size)
  rec.initializeObjectProbe()
  rec.object = np.ones(rec.shape_O, np.complex64)
  rec.probe = probe.astype(np.complex64).reshape(rec.shape_P)
  top, left = ptylab_frame(rec.No, object_shape, size)
  if not np.array_equal(rec.positions, layout[:, [0, 2]] + [top, left]):
    raise RuntimeError("PtyLab placed the windows elsewhere than expected")
  engine = Engines.ePIE(rec, data, params, PtyLab.DummyMonitor())
  engine.numIterations = args.iterations
  engine.betaObject = args.epie_alpha
  # The probe is known. PtyLab's ePIE always updates it: with betaProbe = 0
  # that update adds 0, so it is replaced by the identity, as ours skips it.
  engine.betaProbe = 0.0
  engine.probeUpdate = lambda object_patch, delta: rec.probe
  stamps = {}
  for loop, position in engine.reconstruct_stepwise():
    if position == 0:  # the first position of epoch `loop`: `loop` are done
      stamps.setdefault(loop, time.perf_counter())
  stamps.setdefault(args.iterations, time.perf_counter())
  obj = rec.object.reshape(rec.No, rec.No)
  obj = obj[top:top + object_shape[0], left:left + object_shape[1]]
  return obj, stamps, (metadata.version("ptylab"), f"numpy {np.__version__}")


# --- Entry point -----------------------------------------------------------


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--solver", required=True, choices=SOLVERS)
  parser.add_argument("--scan", required=True, help="scan .npz file")
  parser.add_argument("--out", required=True, help="result .npz file")
  parser.add_argument("--iterations", type=int, required=True)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--timed", type=int, default=20)
  parser.add_argument("--threads", type=int, default=1)
  parser.add_argument("--lsqml_batch_size", type=int, default=10)
  parser.add_argument("--epie_alpha", type=float, default=1.0)
  args = parser.parse_args(argv)
  if min(args.warmup, args.timed, args.threads, args.lsqml_batch_size) < 1:
    parser.error("--warmup, --timed, --threads and --lsqml_batch_size must "
                 "be >= 1")
  if args.iterations < args.warmup + args.timed:
    parser.error(f"--iterations={args.iterations} must be >= --warmup + "
                 f"--timed = {args.warmup + args.timed}")
  return args


def load_scan(path):
  with np.load(path) as f:
    return dict(amplitudes=f["amplitudes"].astype(np.float32),
                layout=f["layout"].astype(np.int32),
                probe=f["probe"].astype(np.complex64),
                object_shape=tuple(int(s) for s in f["object_shape"]))


def main(argv=None):
  args = parse_args(argv)
  pin_threads(args.threads)
  scan = load_scan(args.scan)
  try:
    if args.solver in OURS:
      obj, stamps, versions = run_ours(args.solver, scan, args)
    elif args.solver == "ptylab_epie":
      obj, stamps, versions = run_ptylab(scan, args)
    else:
      obj, stamps, versions = run_ptychi(args.solver.split("_", 1)[1], scan,
                                         args)
  except Unsupported as e:
    print(f"skip: {e}", file=sys.stderr)
    return SKIP_STATUS
  start, stop = args.warmup, args.warmup + args.timed
  seconds = (stamps[stop] - stamps[start]) / args.timed
  np.savez(args.out, object=np.asarray(obj, np.complex64),
           seconds_per_iteration=np.float64(seconds),
           version=np.array(versions[0]), backend=np.array(versions[1]),
           threads=np.int32(args.threads))
  return 0


if __name__ == "__main__":
  sys.exit(main())
