"""benchmarks/bench_peers.py and its worker, benchmarks/peers_worker.py.

The scan conversions to pty-chi's and PtyLab's conventions are checked
against those libraries' forward models written out here in numpy (as their
sources define them: pty-chi 2.2 cuts the window whose top-left pixel is
pos + origin - (h-1)/2, shifts the probe by pos - round(pos) and predicts
|fft2(P O_j)|^2; PtyLab 0.3.7 cuts the window at round(encoder / dxo) +
No//2 - Np//2 and predicts |fftshift(fft2(ifftshift(P O_j), "ortho"))|^2), so
a wrong shift, scale or window fails here without the peers installed. With
$PTYCHONET_PEER_PYTHON naming the peers' interpreter, the same check runs
through the libraries' own code, and the worker runs each peer's solver.
The command-line rows start processes and are in the slow tier; the tiny
run of the benchmark in the release tier (make test-release).
"""
import importlib.util
import os
import subprocess
import textwrap

import numpy as np
import pytest

from helpers import REPO, assert_one_line_error, run_cli

BENCH = "benchmarks/bench_peers.py"
PEER_PYTHON = os.environ.get("PTYCHONET_PEER_PYTHON")
needs_peers = pytest.mark.skipif(
    not (PEER_PYTHON and os.path.isfile(PEER_PYTHON)),
    reason="PTYCHONET_PEER_PYTHON does not name the peers' python "
           "(docs/baselines.md, Against peers)")


def _worker():
  spec = importlib.util.spec_from_file_location(
      "peers_worker", os.path.join(REPO, "benchmarks", "peers_worker.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


worker = _worker()


def _scan(probe_shape, seed=0):
  """A tiny scan: (amplitudes [N, h, w], probe, layout, object, shape)."""
  from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import layouts  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  layout, shape = layouts.layout_from_positions(layouts.fermat_spiral(7, 2.0),
                                                probe_shape)
  obj = (rng.uniform(0.5, 1, shape) *
         np.exp(1j * rng.uniform(-1, 0, shape))).astype(np.complex64)
  probe = (rng.normal(size=probe_shape) +
           1j * rng.normal(size=probe_shape)).astype(np.complex64)
  amplitudes = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return amplitudes, probe, layout, obj, shape


@pytest.mark.parametrize("probe_shape", [(12, 12), (11, 14)])
def test_ptychi_inputs_reproduce_the_scan_in_ptychi_conventions(probe_shape):
  amplitudes, probe, layout, obj, shape = _scan(probe_shape)
  h, w = probe_shape
  intensities, pos_y, pos_x, origin = worker.ptychi_inputs(amplitudes, layout,
                                                           shape)
  assert intensities.dtype == np.float32 and intensities.shape == (7, h, w)
  # No subpixel probe shift: the positions are whole pixels.
  np.testing.assert_array_equal(pos_y, np.round(pos_y))
  np.testing.assert_array_equal(pos_x, np.round(pos_x))
  # About zero-centred, as pty-chi expects.
  assert abs(pos_y.max() + pos_y.min()) <= 2
  assert abs(pos_x.max() + pos_x.min()) <= 2
  for j in range(len(layout)):
    top = pos_y[j] + origin[0] - (h - 1) / 2
    left = pos_x[j] + origin[1] - (w - 1) / 2
    assert (top, left) == (layout[j, 0], layout[j, 2])
    top, left = int(top), int(left)
    predicted = np.abs(np.fft.fft2(probe * obj[top:top + h,
                                               left:left + w])) ** 2
    np.testing.assert_allclose(intensities[j], predicted,
                               atol=1e-4 * predicted.max())


def test_ptylab_inputs_reproduce_the_scan_in_ptylab_conventions():
  amplitudes, probe, layout, obj, shape = _scan((12, 12))
  n = 12
  ptychogram, encoder, dxo = worker.ptylab_inputs(amplitudes, layout, shape)
  # PtyLab's own size would be the scan range + 2 Np; start from less, so
  # that the enlargement is exercised too.
  size = worker.ptylab_object_size(n, shape, n)
  assert size % 2 == 0 and size >= max(shape)
  top, left = worker.ptylab_frame(size, shape, n)
  big = np.ones((size, size), np.complex64)
  big[top:top + shape[0], left:left + shape[1]] = obj
  np.testing.assert_array_equal(
      big[top:top + shape[0], left:left + shape[1]], obj)  # the crop back
  positions = np.round(encoder / dxo).astype(int) + size // 2 - n // 2
  np.testing.assert_array_equal(positions, layout[:, [0, 2]] + [top, left])
  for j, (row, col) in enumerate(positions):
    psi = probe * big[row:row + n, col:col + n]
    predicted = np.abs(np.fft.fftshift(np.fft.fft2(
        np.fft.ifftshift(psi), norm="ortho"))) ** 2
    np.testing.assert_allclose(ptychogram[j], predicted,
                               atol=1e-4 * predicted.max())


def test_ptylab_refuses_non_square_patterns():
  amplitudes, _, layout, _, shape = _scan((11, 14))
  with pytest.raises(worker.Unsupported, match="square"):
    worker.ptylab_inputs(amplitudes, layout, shape)


def test_worker_refuses_too_few_iterations(capsys):
  with pytest.raises(SystemExit):
    worker.parse_args(["--solver=dm", "--scan=s.npz", "--out=o.npz",
                       "--iterations=5", "--warmup=3", "--timed=4"])
  assert "--iterations=5 must be >= --warmup + --timed = 7" in (
      capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.parametrize("flag,phrase", [
    ("--threads=0", "--threads=0 must be integers from 1"),
    ("--solvers=dm,foo", "--solvers=dm,foo: expected some of"),
    ("--peer_python=/no/such/python", "is not an executable file"),
    ("--configs=no_such_config", "config 'no_such_config' has no file"),
    ("--iterations=10", "--iterations=10 must be >="),
])
def test_bad_flags_end_in_one_line(flag, phrase):
  assert_one_line_error(run_cli([BENCH, flag]), phrase)


# Release check (`make test-release`): each solver runs in a fresh
# interpreter of its own (20 s on an AVX2-only CPU); the fast rows above
# check the conversions and the worker's parts in-process.
@pytest.mark.slow
@pytest.mark.release
def test_tiny_run_prints_the_table_of_our_solvers(tmp_path, monkeypatch):
  flagfile = tmp_path / "tiny.flags"
  flagfile.write_text("--flagfile=configs/base.flags\n--probe_size=16,16\n"
                      "--scan=fermat\n--scan_count=10\n--scan_step=1.5\n")
  monkeypatch.delenv("PTYCHONET_PEER_PYTHON", raising=False)
  result = run_cli([BENCH, f"--configs={flagfile}", "--psnr_configs=tiny",
                    "--solvers=dm,epie,ptylab_epie", "--threads=1",
                    "--iterations=8", "--timing_iterations=2",
                    "--warmup_iterations=2"])
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert out.startswith("CPU: ")
  assert ("| solver | tiny (10 x 16^2) s/it, 1 thread | amp / phase PSNR (dB) "
          "after 8 (tiny) |") in out
  rows = [l for l in out.splitlines() if l.startswith("| ptychonet_tf")]
  assert [r.split(" (")[0] for r in rows] == ["| ptychonet_tf DM",
                                              "| ptychonet_tf ePIE"]
  for row in rows:
    seconds, quality = row.split(" | ")[1:3]
    assert float(seconds) > 0
    amplitude, phase = (float(v) for v in quality.rstrip(" |").split(" / "))
    assert amplitude > 5 and phase > 5
  assert "peer rows skipped: no --peer_python" in out


# --- With the peers installed ($PTYCHONET_PEER_PYTHON) ----------------------


def _save_scan(path, probe_shape=(12, 12)):
  from ptychonet_tf.data import scanfile  # pylint: disable=g-import-not-at-top
  amplitudes, probe, layout, obj, shape = _scan(probe_shape)
  scanfile.Scan(amplitudes, layout, probe, shape, obj).save(str(path))
  return obj


@pytest.mark.slow
@needs_peers
def test_the_peers_forward_models_predict_the_converted_data(tmp_path):
  _save_scan(tmp_path / "scan.npz")
  script = textwrap.dedent("""
      import sys
      import numpy as np
      sys.path.insert(0, "benchmarks")
      import peers_worker as w
      import torch
      from ptychi import api
      from ptychi.api.task import PtychographyTask
      from PtyLab.utils.utils import fft2c
      f = np.load(sys.argv[1])
      amps, layout = f["amplitudes"], f["layout"]
      probe, obj = f["probe"], f["object"]
      shape = tuple(f["object_shape"])
      n, h, w_ = amps.shape
      intensities, pos_y, pos_x, origin = w.ptychi_inputs(amps, layout, shape)
      options = api.LSQMLOptions()
      options.reconstructor_options.default_device = api.Devices.CPU
      options.data_options.fft_shift = False
      options.object_options.determine_position_origin_coords_by = (
          api.ObjectPosOriginCoordsMethods.SPECIFIED)
      options.object_options.position_origin_coords = list(origin)
      options.probe_options.optimizable = False
      task = PtychographyTask(options, diffraction_data=intensities,
          object_data=obj[None], probe_data=probe[None, None],
          probe_position_x_px=pos_x, probe_position_y_px=pos_y)
      with torch.no_grad():
        predicted = task.reconstructor.forward_model(torch.arange(n)).numpy()
      print(np.abs(predicted - intensities).max() / intensities.max())
      ptychogram, encoder, dxo = w.ptylab_inputs(amps, layout, shape)
      size = w.ptylab_object_size(h, shape, h)
      top, left = w.ptylab_frame(size, shape, h)
      big = np.ones((size, size), np.complex64)
      big[top:top + shape[0], left:left + shape[1]] = obj
      rows = np.round(encoder / dxo).astype(int) + size // 2 - h // 2
      errors = [np.abs(np.abs(fft2c(probe * big[r:r + h, c:c + h])) ** 2 -
                       ptychogram[j]).max() for j, (r, c) in enumerate(rows)]
      print(max(errors) / ptychogram.max())
      """)
  result = subprocess.run(
      [PEER_PYTHON, "-c", script, str(tmp_path / "scan.npz")], cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  ptychi_error, ptylab_error = (float(v) for v in result.stdout.split()[-2:])
  assert ptychi_error < 1e-4 and ptylab_error < 1e-4


@pytest.mark.slow
@needs_peers
@pytest.mark.parametrize("solver", worker.PEERS)
def test_worker_runs_each_peer(tmp_path, solver):
  obj = _save_scan(tmp_path / "scan.npz")
  out = tmp_path / "out.npz"
  result = subprocess.run(
      [PEER_PYTHON, "benchmarks/peers_worker.py", f"--solver={solver}",
       f"--scan={tmp_path / 'scan.npz'}", f"--out={out}", "--iterations=6",
       "--warmup=2", "--timed=2", "--threads=1", "--lsqml_batch_size=3"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    assert f["object"].shape == obj.shape
    assert np.all(np.isfinite(f["object"]))
    assert float(f["seconds_per_iteration"]) > 0
    assert str(f["version"]) and str(f["backend"])
