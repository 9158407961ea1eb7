"""The reconstruction methods over many scans, timed and scored against the truth.

- `run_learned(predict, amplitudes)`: a learned model over many scans, one
  scan per call, timed.
- `run_solver(amplitudes, truths, geometry, config, ...)`: an iterative
  method (the registry's method of `config`: DM, ePIE or LSQML) over many
  scans in batches, with the object-error curve against the truth; what
  `evaluation.comparison` runs.

Methods come from the registry (`ptychonet_tf.reconstructors`); settings
come in as config objects; nothing here reads flags.
"""
import time

import numpy as np

from ptychonet_tf import reconstructors
from ptychonet_tf.evaluation import metrics


def run_learned(predict, amplitudes):
  """A learned model over scans, one scan per call (batch 1), after a warm-up.

  Args:
    predict: callable float32 [N, h, w] -> complex64 [H, W].
    amplitudes: float32 [S, N, h, w].

  Returns:
    (objects complex64 [S, H, W], median seconds per scan).
  """
  predict(amplitudes[0])  # warm-up: loading and tracing are not reconstruction
  objects, seconds = [], []
  for scan in amplitudes:
    start = time.perf_counter()
    objects.append(predict(scan))
    seconds.append(time.perf_counter() - start)
  return np.stack(objects), float(np.median(seconds))


def run_solver(amplitudes, truths, geometry, config, initial=None, mask=None,
               batch=4, progress=None):
  """An iterative method over many scans in batches of `batch`, with the error curve.

  After every compiled chunk of `config.chunk` iterations the mean squared
  error |O - O_true|^2 on `mask` and the amplitude and phase PSNR (both
  after removing the constant phase offset, as `metrics.complex_metrics`)
  are recorded per scan.

  Args:
    amplitudes: float32 [S, N, h, w].
    truths: complex [S, H, W] ground truth.
    geometry: physics.geometry.Geometry of the scans.
    config: the config of a registered iterative method (e.g.
      baselines.dm.DMConfig: iterations, init, seed, chunk, ...); the method
      is the one whose config class it is.
    initial: optional complex [S, H, W] starting objects (None: config.init).
    mask: bool [H, W] region of the error curve (None: every pixel).
    batch: scans reconstructed together.
    progress: optional tqdm-like bar, advanced by scans x iterations.

  Returns:
    (objects complex64 [S, H, W], seconds per scan (steady-state time per
     iteration x iterations / batch), chi [T] mean over scans, curve): curve
    is a dict of numpy arrays "iterations" int [K] and, means over scans,
    "mse", "amplitude_psnr", "phase_psnr" float [K].
  """
  solver_class = reconstructors.for_config(config)
  batch = max(1, int(batch))
  shape = tuple(geometry.object_shape)
  if mask is None:
    mask = np.ones(shape, bool)
  objects, chis, per_scan, curves = [], [], [], []
  iterations = []
  solver = None
  for start in range(0, len(amplitudes), batch):
    amps = amplitudes[start:start + batch]
    truth = truths[start:start + batch]
    if solver is None or solver.batch != len(amps):
      solver = solver_class(amps, geometry.probe, geometry.layout, shape,
                            config)
    else:
      solver.set_amplitudes(amps)
    curve, its = [], []

    def monitor(done, obj, truth=truth, curve=curve, its=its, n=len(amps)):
      obj = np.asarray(obj).reshape((n,) + shape)
      row = []
      for o, t in zip(obj, truth):
        a = metrics.remove_phase_offset(o, t, mask)
        row.append([float(np.mean(np.abs(a - t)[mask] ** 2)),
                    metrics.psnr(np.abs(a), np.abs(t), mask),
                    metrics.psnr(metrics.aligned_phase(a, t), np.angle(t),
                                 mask)])
      curve.append(row)
      its.append(done)
      if progress is not None:
        progress.update(n * (done - (its[-2] if len(its) > 1 else 0)))

    init = None if initial is None else initial[start:start + batch]
    result = solver.run(init, monitor=monitor)
    objects.append(np.asarray(result.object).reshape((len(amps),) + shape))
    chis.append(np.asarray(result.chi).reshape(config.iterations, -1))
    per_scan.append(result.seconds_per_iteration * config.iterations /
                    len(amps))
    curves.append(np.asarray(curve, np.float64).reshape(len(its), -1, 3))
    iterations = its
  means = np.concatenate(curves, axis=1).mean(axis=1)
  return (np.concatenate(objects).astype(np.complex64),
          float(np.mean(per_scan)),
          np.concatenate(chis, axis=1).mean(axis=1),
          {"iterations": np.asarray(iterations), "mse": means[:, 0],
           "amplitude_psnr": means[:, 1], "phase_psnr": means[:, 2]})
