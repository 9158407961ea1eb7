"""Distributed training on CPU: MirroredStrategy on two logical CPU devices,
and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import GEOMETRY_FLAGS, REPO, SMALL_NET, run_cli, write_tiny


# End-to-end: every test here runs the command line in subprocesses.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  # Two train shards: one per worker.
  return write_tiny(str(tmp_path_factory.mktemp("tiny")), num_train=8,
                    num_test=2, num_shards=2)


def test_mirrored_on_two_cpu_devices(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  result = run_cli(["-m", "ptychonet_tf.train", *GEOMETRY_FLAGS, *SMALL_NET,
                    f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                    "--batch_size=4", "--epochs=1", "--distribution=mirrored",
                    "--cpu_devices=2", "--noexport"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert ("2 replica(s), batches of 40 patterns (4 scans' worth, mixed "
          "across scans), 1 epochs of 2 steps") in result.stdout
  assert "final held-out" in result.stdout
  assert os.path.isfile(model_dir / "ckpt-2.index")


WORKER = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training import config as config_lib
from ptychonet_tf.training import trainer
from ptychonet_tf.training import strategy as strategy_lib

data_dir, model_dir, out = sys.argv[1:4]
strategy = strategy_lib.make_strategy("multi_worker")
assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
config = config_lib.TrainConfig(
    data_dir=data_dir, model_dir=model_dir,
    network=NetworkConfig(base_channels=4, depth=2), epochs=1, batch_size=4,
    num_images=0, export=False, verbose=False)
tr = trainer.Trainer(config, strategy)
tr.train()
np.savez(out, step=tr.step, chief=tr.is_chief,
         **{f"w{i}": w for i, w in enumerate(tr.model.get_weights())})
"""


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_multi_worker_two_processes_end_with_identical_weights(data_dir,
                                                                tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  model_dir = tmp_path / "run"
  workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
  procs = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers},
                 "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
               TF_CONFIG=json.dumps(tf_config))
    procs.append(subprocess.Popen(
        [sys.executable, str(script), data_dir, str(model_dir),
         str(tmp_path / f"weights{index}.npz")], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=300)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  w0 = np.load(tmp_path / "weights0.npz")
  w1 = np.load(tmp_path / "weights1.npz")
  assert bool(w0["chief"]) and not bool(w1["chief"])
  assert int(w0["step"]) == int(w1["step"]) == 2  # 1 epoch of 8 // 4
  names = [k for k in w0.files if k.startswith("w")]
  assert len(names) > 4
  for name in names:
    np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
  # The chief checkpoints once, at the end of the epoch, into the one
  # model_dir; the other worker's scratch copy is gone.
  assert sorted(n for n in os.listdir(model_dir) if n.startswith("ckpt-")) == [
      "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
  assert not [n for n in os.listdir(model_dir) if n.startswith(".scratch")]
