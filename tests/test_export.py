"""SavedModel export: TF Serving layout, plain-TF reload in a fresh process,
saved_model_cli, the serving client, and one-line errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_one_line_error, run_cli, run_fresh_script, write_tiny
from ptychonet_tf.data import scanfile
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import inference
from ptychonet_tf.model import network
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import trainer
from ptychonet_tf.training import run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A run directory trained for one epoch in-process (no export)."""
  root = tmp_path_factory.mktemp("export")
  data_dir = write_tiny(str(root / "data"))
  model_dir = str(root / "run")
  config = config_lib.TrainConfig(
      data_dir=data_dir, model_dir=model_dir,
      network=NetworkConfig(base_channels=4, depth=2), epochs=1, batch_size=4,
      num_images=0, export=False, verbose=False)
  trainer.Trainer(config, tf.distribute.get_strategy()).train()
  return model_dir


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  export_dir = str(tmp_path_factory.mktemp("serving") / "ptychonet")
  result = run_cli(["-m", "ptychonet_tf.export", f"--model_dir={trained}",
                    f"--export_dir={export_dir}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "exported" in result.stdout
  return export_dir


@pytest.mark.slow
def test_export_in_process_reproduces_the_model(tmp_path):
  """Fast tier: an untrained tiny model, exported and reloaded in-process."""
  model, probe = tiny_model()
  layout, shape = model.layout, model.object_shape
  x = np.random.default_rng(0).uniform(0, 2, (2, 9, 16, 16)).astype(np.float32)
  reference = {k: v.numpy() for k, v in model(x).items()}
  base = tmp_path / "export"
  path = export_lib.export_saved_model(model, probe, str(base), 7)
  assert os.path.basename(path) == "7" and os.listdir(base) == ["7"]
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](amplitudes=tf.constant(x))
  for key in ("amplitude", "phase"):
    assert out[key].shape == (2,) + tuple(shape)
    np.testing.assert_allclose(out[key].numpy(), reference[key], atol=1e-5)
  geometry_out = loaded.signatures["geometry"]()
  np.testing.assert_array_equal(geometry_out["layout"].numpy(), layout)
  np.testing.assert_allclose(geometry_out["probe_real"].numpy(), probe.real,
                             atol=1e-7)
  # A second export of the same version replaces the first whole.
  export_lib.export_saved_model(model, probe, str(base), 7)
  assert os.listdir(base) == ["7"]
  # Loading it for a scan checks the scan's probe against the model's.
  scan = types.SimpleNamespace(amplitudes=x[0], layout=layout,
                               object_shape=shape, probe=probe)
  model_for_scan = inference.PtychoNetModel(str(base), scan)
  assert model_for_scan.probe_difference == 0.0
  np.testing.assert_allclose(np.abs(model_for_scan(x[0])),
                             reference["amplitude"][0], atol=1e-5)
  scan.probe = probe_lib.make_probe((16, 16), "zone_plate", 0.6)
  with pytest.raises(UserError, match="trained with another probe"):
    inference.PtychoNetModel(str(base), scan)
  inference.PtychoNetModel(str(base), scan, allow_other_probe=True)


def tiny_model():
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.5)
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 5), (16, 16))
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(NetworkConfig(base_channels=4, depth=2),
                              geometry)
  model(np.zeros((1, 9, 16, 16), np.float32))
  return model, probe


def ended_pid():
  """The pid of a process that has ended (and been reaped)."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


@pytest.mark.slow  # 3.4-4.2 s on an AVX2-only CPU
def test_next_export_removes_what_killed_exports_left(tmp_path):
  model, probe = tiny_model()
  base = tmp_path / "export"
  base.mkdir()
  dead = ended_pid()
  host = export_lib.temp_name(1).split("-")[2]
  sleeper = subprocess.Popen([sys.executable, "-c",
                              "import time; time.sleep(60)"])
  try:
    stale = [f".tmp-3-{host}-{dead}", f".tmp-4-{dead}"]  # (older names)
    kept = [f".tmp-5-{host}-{sleeper.pid}",  # an export still running
            f".tmp-6-otherhost-{dead}",  # another machine's: cannot tell
            f".tmp-7-{host}-{os.getpid()}"]  # this process's own
    for name in stale + kept:
      (base / name / "variables").mkdir(parents=True)
      (base / name / "saved_model.pb").write_bytes(b"half")
    (base / "2").mkdir()  # version 2, complete
    (base / f"2.old-{dead}").mkdir()  # replace_dir's aside copy, killed
    (base / f"1.old-{dead}").mkdir()  # killed between its two renames
    (base / f"1.old-{dead}" / "saved_model.pb").write_bytes(b"v1")
    export_lib.export_saved_model(model, probe, str(base), 8)
    assert sorted(os.listdir(base)) == sorted(["1", "2", "8"] + kept)
    assert (base / "1" / "saved_model.pb").read_bytes() == b"v1"
  finally:
    sleeper.kill()
    sleeper.wait()


@pytest.mark.slow
def test_export_killed_midway_is_cleaned_by_the_next(tmp_path):
  """SIGKILL after the SavedModel is written to its temp folder, before the
  rename: the folder stays (hidden from TF Serving) until the next export."""
  script = tmp_path / "killed.py"
  script.write_text(KILLED_EXPORT)
  base = tmp_path / "export"
  result = run_cli([str(script), str(base)])
  assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  left = os.listdir(base)
  assert len(left) == 1 and left[0].startswith(".tmp-5-"), left
  model, probe = tiny_model()
  export_lib.export_saved_model(model, probe, str(base), 6)
  assert os.listdir(base) == ["6"]


KILLED_EXPORT = r"""
import os, signal, sys
import tensorflow as tf
sys.path.insert(0, "tests")
from test_export import tiny_model
from ptychonet_tf.model import export as export_lib

save = tf.saved_model.save


def save_then_die(*args, **kwargs):
  save(*args, **kwargs)
  os.kill(os.getpid(), signal.SIGKILL)


tf.saved_model.save = save_then_die
model, probe = tiny_model()
export_lib.export_saved_model(model, probe, sys.argv[1], 5)
"""


def keras_reference(model_dir, amplitudes):
  model, _, _ = run_dir.load_trained_model(model_dir)
  out = model(amplitudes)
  return {k: v.numpy() for k, v in out.items()}


FRESH = r"""
import sys
import numpy as np
import tensorflow as tf
path, x_path, out_path = sys.argv[1:4]
loaded = tf.saved_model.load(path)
fn = loaded.signatures["serving_default"]
out = fn(amplitudes=tf.constant(np.load(x_path)))
geometry = loaded.signatures["geometry"]()
assert not [m for m in sys.modules if m.startswith("ptychonet")]
np.savez(out_path, **{k: v.numpy() for k, v in out.items()},
         **{"geometry_" + k: v.numpy() for k, v in geometry.items()})
"""


@pytest.mark.slow
def test_export_layout_and_fresh_process_reload(trained, exported, tmp_path):
  versions = os.listdir(exported)
  assert versions == ["2"]  # the step: 8 scans / batch 4, one epoch
  version_dir = os.path.join(exported, "2")
  assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
  assert os.path.isdir(os.path.join(version_dir, "variables"))
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    graph = f.read()
  # The scatter is there, and no function demands XLA (_XlaMustCompile=true).
  assert b"TensorScatterAdd" in graph
  assert b"_XlaMustCompile\x12\x02(\x01" not in graph
  x = np.random.default_rng(0).random((3, 10, 16, 16)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  result = run_fresh_script(
      tmp_path, FRESH,
      [version_dir, str(tmp_path / "x.npy"), str(tmp_path / "out.npz")])
  assert result.returncode == 0, result.stderr[-3000:]
  got = np.load(tmp_path / "out.npz")
  ref = keras_reference(trained, x)
  for key in ("amplitude", "phase"):
    assert got[key].shape == ref[key].shape
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)
  geometry = np.load(os.path.join(trained, "geometry.npz"))
  np.testing.assert_array_equal(got["geometry_layout"], geometry["layout"])
  np.testing.assert_allclose(got["geometry_probe_real"],
                             geometry["probe"].real, rtol=1e-6)
  np.testing.assert_array_equal(got["geometry_object_shape"],
                                geometry["object_shape"])


@pytest.mark.slow
def test_saved_model_cli_runs_it(trained, exported, tmp_path):
  cli = shutil.which("saved_model_cli")
  if cli is None:
    pytest.skip("saved_model_cli is not installed")
  x = np.random.default_rng(1).random((1, 10, 16, 16)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [cli, "run", "--dir", os.path.join(exported, "2"), "--tag_set", "serve",
       "--signature_def", "serving_default",
       "--inputs", f"amplitudes={tmp_path / 'x.npy'}",
       "--outdir", str(tmp_path / "cli"), "--overwrite"],
      env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  ref = keras_reference(trained, x)
  np.testing.assert_allclose(np.load(tmp_path / "cli" / "phase.npy"),
                             ref["phase"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_serving_client_builds_the_rest_request(trained, tmp_path):
  geometry = np.load(os.path.join(trained, "geometry.npz"))
  amplitudes = np.random.default_rng(2).random((10, 16, 16)).astype(np.float32)
  scan_path = str(tmp_path / "scan.npz")
  scanfile.Scan(amplitudes=amplitudes, layout=geometry["layout"],
                probe=geometry["probe"],
                object_shape=tuple(geometry["object_shape"])).save(scan_path)
  result = run_cli(["tools/serving_client.py", scan_path])
  assert result.returncode == 0, result.stderr[-2000:]
  request = json.loads(result.stdout)
  assert request["signature_name"] == "serving_default"
  sent = np.asarray(request["inputs"]["amplitudes"], np.float32)
  assert sent.shape == (1, 10, 16, 16)
  np.testing.assert_array_equal(sent[0], amplitudes)
  result = run_cli(["tools/serving_client.py", str(tmp_path / "missing.npz")])
  assert_one_line_error(result, "missing.npz")


@pytest.mark.slow
def test_export_of_an_empty_model_dir_is_one_line(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  result = run_cli(["-m", "ptychonet_tf.export", f"--model_dir={empty}",
                    f"--export_dir={tmp_path / 'out'}"])
  assert_one_line_error(result, str(empty), "no trained model")
  with pytest.raises(UserError, match="nowhere does not exist"):
    run_dir.load_trained_model(str(tmp_path / "nowhere"))
  (empty / "model.json").write_text("{}")  # no checkpoint yet
  with pytest.raises(UserError, match="no trained model"):
    run_dir.load_trained_model(str(empty))

