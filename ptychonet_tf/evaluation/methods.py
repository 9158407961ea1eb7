"""The reconstruction methods this package compares, as library calls.

- `reconstruct(scan, method, ...)`: one scan with DM, ePIE, LSQML, a
  PtychoNet SavedModel, or DM started from the network's output (the paper's
  section 6); what `python -m ptychonet_tf.reconstruct` runs.
- `run_learned(predict, amplitudes)`: a learned model over many scans, one
  scan per call, timed.
- `run_dm(amplitudes, truths, geometry, config, ...)`: DM (or LSQML, given
  an LSQMLConfig) over many scans in batches, with the object-error curve
  against the truth; what `python -m ptychonet_tf.evaluate` runs.

Settings come in as config objects (`baselines.dm.DMConfig`,
`baselines.epie.EPIEConfig`, `baselines.lsqml.LSQMLConfig`); nothing here
reads flags.
"""
import time

import numpy as np

from ptychonet_tf.evaluation import metrics

METHODS = ("dm", "epie", "lsqml", "ptychonet", "ptychonet+dm")
LEARNED_METHODS = ("ptychonet", "ptychonet+dm")


def reconstruct(scan, method, dm_config=None, epie_config=None, model=None,
                lsqml_config=None):
  """Runs one method on a scan.

  Args:
    scan: data.scanfile.Scan.
    method: one of METHODS.
    dm_config: baselines.dm.DMConfig for "dm" and "ptychonet+dm".
    epie_config: baselines.epie.EPIEConfig for "epie".
    model: a model.inference.PtychoNetModel for "ptychonet" and
      "ptychonet+dm" (callable float32 [N, h, w] -> complex64 [H, W]).
    lsqml_config: baselines.lsqml.LSQMLConfig for "lsqml".

  Returns:
    dict: object complex64 [H, W], probe complex64 [h, w], chi and
    fourier_error float32 [T] (empty for "ptychonet"), seconds (total),
    seconds_per_iteration, network_seconds (one warm call of the network).
  """
  from ptychonet_tf.baselines import dm  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.baselines import epie  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.baselines import lsqml  # pylint: disable=g-import-not-at-top
  if method not in METHODS:
    raise ValueError(f"method {method!r} is not one of {METHODS}")
  if method in LEARNED_METHODS and model is None:
    raise ValueError(f"method {method} needs a model")
  start = time.perf_counter()
  result = dict(probe=scan.probe, chi=np.zeros([0], np.float32),
                fourier_error=np.zeros([0], np.float32),
                seconds_per_iteration=0.0, network_seconds=0.0)
  initial = None
  if method in LEARNED_METHODS:
    model(scan.amplitudes)  # warm-up (first call traces the graph)
    tick = time.perf_counter()
    initial = model(scan.amplitudes)
    result["network_seconds"] = time.perf_counter() - tick
    result["object"] = initial
  run = None
  if method in ("dm", "ptychonet+dm"):
    run = dm.difference_map(scan.amplitudes, scan.probe, scan.layout,
                            scan.object_shape, dm_config or dm.DMConfig(),
                            initial_object=initial)
  elif method == "epie":
    run = epie.epie(scan.amplitudes, scan.probe, scan.layout, scan.object_shape,
                    epie_config or epie.EPIEConfig())
  elif method == "lsqml":
    run = lsqml.lsqml(scan.amplitudes, scan.probe, scan.layout,
                      scan.object_shape, lsqml_config or lsqml.LSQMLConfig())
  if run is not None:
    result.update(object=run.object, probe=run.probe, chi=run.chi,
                  fourier_error=run.fourier_error,
                  seconds_per_iteration=run.seconds_per_iteration)
  result["seconds"] = time.perf_counter() - start
  return result


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


def run_dm(amplitudes, truths, geometry, config, initial=None, mask=None,
           batch=4, progress=None):
  """DM (or LSQML) over many scans in batches of `batch`, with the error curve.

  After every compiled chunk of `config.chunk` iterations the mean squared
  error |O - O_true|^2 on `mask` and the amplitude and phase PSNR (both
  after removing the constant phase offset, as `metrics.complex_metrics`)
  are recorded per scan.

  Args:
    amplitudes: float32 [S, N, h, w].
    truths: complex [S, H, W] ground truth.
    geometry: physics.geometry.Geometry of the scans.
    config: baselines.dm.DMConfig (iterations, init, seed, chunk, ...), or a
      baselines.lsqml.LSQMLConfig to run LSQML instead.
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
  from ptychonet_tf.baselines import dm  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.baselines import lsqml  # pylint: disable=g-import-not-at-top
  solver_class = (lsqml.LSQML if isinstance(config, lsqml.LSQMLConfig)
                  else dm.DifferenceMap)
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
