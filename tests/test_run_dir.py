"""The run directory's rules (`training.run_dir.plan` and `apply`) on run
directories made of files: no model is built or trained here.

A fake run is what a training run leaves: run.json, model.json, flags.txt,
geometry.npz, a checkpoint state file with empty ckpt-STEP files, train/.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import (GEOMETRY_FLAGS, REPO, SMALL_NET, assert_one_line_error,
                     run_cli, snapshot, write_tiny)
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics.geometry import Geometry
from ptychonet_tf.training import run_dir
from ptychonet_tf.utils import locks
from ptychonet_tf.utils.errors import UserError

def geometry(probe_size=16):
  """6 windows of probe_size on a (probe_size + 4) x (probe_size + 8) object."""
  probe = np.ones((probe_size, probe_size), np.complex64)
  layout = [[r, r + probe_size, c, c + probe_size]
            for r in (0, 4) for c in (0, 4, 8)]
  return Geometry(probe=probe, layout=np.array(layout, np.int32),
                  object_shape=(probe_size + 4, probe_size + 8))


def dataset(data_dir, num_train=8, probe_size=16):
  """A dataset record as run.json holds it."""
  return {"data_dir": os.path.abspath(data_dir),
          "identity": {"num_train": num_train, "seed": 0},
          "geometry": run_dir.geometry_record(geometry(probe_size))}


def model_config(**settings):
  """A model.json of the tiny network (settings a model.json may lack take
  their defaults)."""
  g = geometry()
  config = {"layout": g.layout.tolist(), "probe_shape": [16, 16],
            "object_shape": list(g.object_shape), "stitch_weights": [[1.0]],
            "compute_policy": "float32"}
  config.update(NetworkConfig(base_channels=4, depth=2).model_settings())
  config.update(settings)
  return json.loads(json.dumps(config))


def fake_run(model_dir, record, config=None, steps=(1,), **extra):
  """The files a training run on `record` leaves in model_dir."""
  os.makedirs(os.path.join(model_dir, "train"), exist_ok=True)
  run_dir.write_run_file(str(model_dir), record, **extra)
  with open(os.path.join(model_dir, run_dir.MODEL_FILE), "w") as f:
    json.dump(config or model_config(), f)
  with open(os.path.join(model_dir, run_dir.FLAGS_FILE), "w") as f:
    f.write("--base_channels=4\n")
  geometry().save(os.path.join(model_dir, run_dir.GEOMETRY_FILE))
  for step in steps:
    for suffix in (".index", ".data-00000-of-00001"):
      open(os.path.join(model_dir, f"ckpt-{step}{suffix}"), "w").close()
  with open(os.path.join(model_dir, "checkpoint"), "w") as f:
    f.write(f'model_checkpoint_path: "ckpt-{steps[-1]}"\n')
  return str(model_dir)


@pytest.fixture
def run(tmp_path):
  """A run on dataset tmp/data, and that record."""
  record = dataset(tmp_path / "data")
  return fake_run(tmp_path / "run", record), record


def plan(model_dir, record, config=None, **kw):
  return run_dir.plan(str(model_dir), record, config or model_config(), **kw)


def one_line_error(match):
  return pytest.raises(UserError, match=match)


def test_a_new_run_writes_only_run_json(tmp_path):
  record = dataset(tmp_path / "data")
  start = plan(tmp_path / "new", record)
  assert start.record and not start.resume and not start.weights_from
  assert not start.move_aside
  assert not os.path.exists(tmp_path / "new")  # planning writes nothing
  run_dir.apply(str(tmp_path / "new"), start, record)
  assert os.listdir(tmp_path / "new") == [run_dir.RUN_FILE]
  assert run_dir.read_run_file(str(tmp_path / "new"))["dataset"] == record


def test_the_same_run_resumes(run):
  model_dir, record = run
  before = snapshot(model_dir)
  start = plan(model_dir, record)
  assert start.resume == os.path.join(model_dir, "ckpt-1")
  assert not start.record and not start.move_aside
  # A dataset in another folder with the same identity is the same data.
  elsewhere = dict(record, data_dir="/somewhere/else")
  assert plan(model_dir, elsewhere).resume == start.resume
  # A model.json without a setting written later means its default.
  config = model_config()
  del config["refine_inertia"], config["input_norm"]
  with open(os.path.join(model_dir, run_dir.MODEL_FILE), "w") as f:
    json.dump(config, f)
  assert plan(model_dir, record).resume == start.resume
  before.pop(run_dir.MODEL_FILE)
  after = snapshot(model_dir)
  after.pop(run_dir.MODEL_FILE)
  assert after == before


@pytest.mark.parametrize("settings,phrase", [
    (dict(base_channels=8), "base_channels: 4 there, 8 here"),
    (dict(refine_steps=3), "refine_steps: 0 there, 3 here"),
    (dict(stitch_weights=None), 'stitch_weighting: "probe" there, '
                                '"uniform" here'),
    (dict(refine_inertia=0.3), "refine_inertia: 0.001 there, 0.3 here"),
])
def test_other_network_settings_are_refused(run, settings, phrase):
  model_dir, record = run
  before = snapshot(model_dir)
  with one_line_error("was trained with other network settings") as raised:
    plan(model_dir, record, model_config(**settings))
  assert phrase in str(raised.value) and "\n" not in str(raised.value)
  # The precision is not a network setting: a run may resume in another.
  assert plan(model_dir, record, model_config(
      compute_policy="mixed_bfloat16")).resume
  assert snapshot(model_dir) == before


def test_another_dataset_is_refused_unless_restart_or_fine_tune(run, tmp_path):
  model_dir, record = run
  other = dataset(tmp_path / "data6", num_train=6)
  before = snapshot(model_dir)
  with one_line_error(
      r"model_dir .*run holds a run on another dataset \(.*data; num_train: "
      r"8 there, 6 here\); use a new --model_dir, --fine_tune to start from "
      r"its weights, or --restart to start over"):
    plan(model_dir, other)
  wide = dataset(tmp_path / "wide", probe_size=32)
  with one_line_error(r"another dataset \(.*; probe_shape: \[16, 16\] there, "
                      r"\[32, 32\] here, "):
    plan(model_dir, wide)
  fine = plan(model_dir, other, fine_tune=True)
  assert fine.weights_from == os.path.join(model_dir, "ckpt-1")
  assert fine.weights_flag == "--fine_tune"
  assert fine.weights_dataset == record and fine.move_aside
  assert fine.record_key == "fine_tuned_from" and not fine.resume
  fresh = plan(model_dir, other, restart=True)
  assert fresh.move_aside and fresh.record and not fresh.weights_from
  assert snapshot(model_dir) == before
  # On its own dataset, --fine_tune resumes.
  assert plan(model_dir, record, fine_tune=True).resume


def test_fine_tune_moves_the_run_aside_and_records_where_its_weights_are(
    run, tmp_path):
  model_dir, record = run
  other = dataset(tmp_path / "data6", num_train=6)
  before = snapshot(model_dir)
  start = plan(model_dir, other, fine_tune=True)
  source = {"checkpoint": start.weights_from, "dataset": record, "step": 1}
  notes = run_dir.apply(model_dir, start, other, source)
  (previous,) = [n for n in os.listdir(model_dir) if n.startswith("previous-")]
  previous = os.path.join(model_dir, previous)
  assert notes == [f"moved the old run to {previous}"]
  assert snapshot(previous) == before
  assert sorted(os.listdir(model_dir)) == sorted(
      [run_dir.RUN_FILE, os.path.basename(previous)])
  written = run_dir.read_run_file(model_dir)
  assert written["dataset"] == other
  assert written["fine_tuned_from"] == dict(
      source, checkpoint=os.path.join(previous, "ckpt-1"))
  assert os.path.isfile(written["fine_tuned_from"]["checkpoint"] + ".index")


def test_older_run_without_run_json_is_adopted_when_its_geometry_fits(
    run, tmp_path):
  model_dir, record = run
  os.remove(os.path.join(model_dir, run_dir.RUN_FILE))
  start = plan(model_dir, record)
  assert start.resume and start.record
  assert start.notes == [f"note: model_dir {model_dir} has no run.json (an "
                         f"older run); recording {record['data_dir']} as its "
                         f"dataset"]
  with one_line_error("holds a run on another dataset"):
    plan(model_dir, dataset(tmp_path / "wide", probe_size=32))


def test_fine_tune_needs_a_checkpoint(tmp_path):
  record = dataset(tmp_path / "data")
  with one_line_error("--fine_tune: model_dir .* holds no checkpoint to "
                      "start from"):
    plan(tmp_path / "empty", record, fine_tune=True)
  model_dir = fake_run(tmp_path / "run", record, steps=(1,))
  for name in os.listdir(model_dir):
    if name.startswith("ckpt-") or name == "checkpoint":
      os.remove(os.path.join(model_dir, name))
  with one_line_error("holds no checkpoint to start from"):
    plan(model_dir, dataset(tmp_path / "d6", num_train=6), fine_tune=True)
  assert not os.path.exists(tmp_path / "empty")


def test_model_dir_that_is_a_file_or_a_half_moved_run(run, tmp_path):
  model_dir, record = run
  (tmp_path / "file").write_text("x")
  with one_line_error("is a file; expected a directory"):
    plan(tmp_path / "file", record)
  os.makedirs(os.path.join(model_dir, ".previous-20260101-000000"))
  with one_line_error("whose move aside was interrupted; re-run with "
                      "--restart to finish it"):
    plan(model_dir, record)
  start = plan(model_dir, record, restart=True)
  run_dir.apply(model_dir, start, record)
  assert sorted(os.listdir(model_dir)) == ["previous-20260101-000000",
                                           run_dir.RUN_FILE]


def test_init_from_starts_a_new_run_and_resumes_it(run, tmp_path, monkeypatch):
  source, record = run
  model_dir = str(tmp_path / "tuned")
  start = plan(model_dir, record, init_from=source)
  assert start.weights_from == source and start.weights_flag == "--init_from"
  assert start.record_key == "initialized_from" and not start.move_aside
  run_dir.apply(model_dir, start, record, {
      "checkpoint": os.path.join(source, "ckpt-1"), "dataset": record,
      "step": 1})
  written = run_dir.read_run_file(model_dir)["initialized_from"]
  assert written["run"] == source
  assert written["checkpoint"] == os.path.join(source, "ckpt-1")
  # Killed before its first checkpoint: it starts again from those weights.
  again = plan(model_dir, record, init_from=source)
  assert again.weights_from == os.path.join(source, "ckpt-1")
  # After its first checkpoint the same request resumes, however the path
  # to the source is spelled: dir/ or dir, relative or absolute.
  fake_run(model_dir, record, initialized_from=written)
  monkeypatch.chdir(tmp_path)
  for spelling in (source, source + "/", "run", "./run/",
                   os.path.join("..", os.path.basename(str(tmp_path)), "run")):
    resumed = plan(model_dir, record, init_from=spelling)
    assert resumed.resume == os.path.join(model_dir, "ckpt-1"), spelling
    assert not resumed.weights_from
  # Another source where a run is: refused, unless --restart.
  with one_line_error("--init_from starts a new run, but model_dir .* holds "
                      "one; use a new --model_dir, or --restart"):
    plan(model_dir, record, init_from=str(tmp_path / "elsewhere"))
  assert plan(model_dir, record, init_from=str(tmp_path / "elsewhere"),
              restart=True).move_aside


def test_init_from_its_own_model_dir_with_restart_records_the_moved_weights(
    run):
  """--init_from=<model_dir> --restart: the weights move aside with the old
  run, and run.json names them there, not the new run's ckpt-1."""
  model_dir, record = run
  start = plan(model_dir, record, init_from=model_dir, restart=True)
  assert start.weights_from == model_dir and start.move_aside
  source = {"checkpoint": os.path.join(model_dir, "ckpt-1"),
            "dataset": record, "step": 1}
  run_dir.apply(model_dir, start, record, source)
  (previous,) = [n for n in os.listdir(model_dir) if n.startswith("previous-")]
  written = run_dir.read_run_file(model_dir)["initialized_from"]
  assert written["checkpoint"] == os.path.join(model_dir, previous, "ckpt-1")
  assert os.path.isfile(written["checkpoint"] + ".index")
  assert written["run"] == model_dir
  # The new run, killed before its first checkpoint, starts again from them.
  again = plan(model_dir, record, init_from=model_dir)
  assert again.weights_from == written["checkpoint"]
  # An export inside the old run moves the same way.
  os.makedirs(os.path.join(model_dir, "export", "3"))
  start = plan(model_dir, record, init_from=os.path.join(model_dir, "export"),
               restart=True)
  run_dir.apply(model_dir, start, record, {
      "saved_model": os.path.join(model_dir, "export", "3"), "step": 3,
      "dataset": None})
  written = run_dir.read_run_file(model_dir)["initialized_from"]
  assert os.path.isdir(written["saved_model"])
  assert os.path.basename(os.path.dirname(os.path.dirname(
      written["saved_model"]))).startswith("previous-")


@pytest.mark.parametrize("names,phrase", [
    (["dataset.json", "train-00000-of-00001.tfrecord"],
     "holds a dataset (dataset.json)"),
    (["train-00000-of-00001.tfrecord"],
     "holds a dataset (train-00000-of-00001.tfrecord)"),
    (["notes.txt", "photos"], "holds files that are not a training run's "
                              "(notes.txt, photos)"),
])
def test_restart_refuses_to_move_what_is_not_a_run(run, tmp_path, names,
                                                  phrase):
  model_dir, record = run
  for name in names:
    path = os.path.join(model_dir, name)
    if "." in name:
      open(path, "w").close()
    else:
      os.makedirs(path)
  before = snapshot(model_dir)
  for kw in (dict(restart=True),
             dict(restart=True, init_from=model_dir),
             dict(fine_tune=True, record=dataset(tmp_path / "d6", 6))):
    with one_line_error("model_dir .*") as raised:
      plan(model_dir, kw.pop("record", record), **kw)
    assert phrase in str(raised.value) and "\n" not in str(raised.value)
  assert snapshot(model_dir) == before
  # Without a move nothing is refused: a new run may start in a folder that
  # holds a user's files (they stay where they are).
  os.makedirs(tmp_path / "mine")
  (tmp_path / "mine" / "notes.txt").write_text("x")
  start = plan(tmp_path / "mine", record)
  assert start.record and not start.move_aside


def test_a_run_writing_into_a_dataset_is_refused(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "dataset.json").write_text("{}")
  with one_line_error(r"holds a dataset \(dataset.json\); a run must not "
                      r"write into it"):
    plan(data, dataset(data))


def test_the_lock_is_neither_moved_nor_a_run(run):
  model_dir, record = run
  with locks.hold(model_dir, "train"):
    assert locks.LOCK_NAME not in run_dir.run_entries(model_dir)
    assert plan(model_dir, record).resume  # resuming is not disturbed
    start = plan(model_dir, record, restart=True)
    run_dir.apply(model_dir, start, record)
    assert locks.LOCK_NAME in os.listdir(model_dir)
  (previous,) = [n for n in os.listdir(model_dir) if n.startswith("previous-")]
  assert locks.LOCK_NAME not in os.listdir(os.path.join(model_dir, previous))
  # A new run in a folder that holds only a lock is a new run.
  lonely = os.path.dirname(model_dir) + "/lonely"
  with locks.hold(lonely, "train"):
    start = plan(lonely, record)
    assert start.record and not start.move_aside and not start.resume


def test_run_files_and_foreign_files(tmp_path):
  names = ["run.json", "run.json.tmp", "flags.txt", "model.json",
           "geometry.npz", "results.json", "checkpoint", "checkpoint.tmp3f2a",
           "ckpt-4.index", "ckpt-4.data-00000-of-00001", "ckpt-5_temp",
           "train", "eval", "export", ".scratch-worker-1", ".lock",
           "previous-20260101-000000", "mine.txt", "dataset.json"]
  for name in names:
    open(tmp_path / name, "w").close()
  assert run_dir.foreign_entries(str(tmp_path)) == ["dataset.json",
                                                    "mine.txt"]


def test_locked_removes_a_model_dir_it_created_for_a_failed_job(tmp_path):
  model_dir = str(tmp_path / "new")
  with pytest.raises(UserError, match="refused"):
    with run_dir.locked(model_dir):
      assert os.listdir(model_dir) == [locks.LOCK_NAME]
      raise UserError("refused")
  assert not os.path.exists(model_dir)
  with run_dir.locked(model_dir):
    run_dir.write_run_file(model_dir, dataset(tmp_path / "data"))
  assert sorted(os.listdir(model_dir)) == [locks.LOCK_NAME, run_dir.RUN_FILE]


@pytest.mark.slow
def test_a_second_train_on_one_model_dir_is_refused(tmp_path):
  """Two `train` on one --model_dir: the second is refused in one line naming
  the first's PID, and the first finishes normally. The first is paused
  while it holds the lock, so the second surely tries it while it runs."""
  data_dir = write_tiny(str(tmp_path / "data"))
  model_dir = tmp_path / "run"
  args = ["-m", "ptychonet_tf.train", *GEOMETRY_FLAGS, *SMALL_NET,
          f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--batch_size=2", "--noexport", "--eval_scans=1", "--num_images=0",
          "--epochs=1"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  first = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  try:
    deadline = time.time() + 120
    while (locks.holder(str(model_dir)) or (None,))[0] != first.pid:
      assert first.poll() is None and time.time() < deadline, (
          first.communicate())
      time.sleep(0.1)
    first.send_signal(signal.SIGSTOP)
    try:
      second = run_cli(args)
    finally:
      first.send_signal(signal.SIGCONT)
    assert_one_line_error(second, f"{model_dir} is in use by train (PID "
                                  f"{first.pid})")
    out, err = first.communicate(timeout=300)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, err[-3000:]
  assert "epoch 1/1" in out and "final held-out" in out
  assert os.path.isfile(model_dir / "ckpt-4.index")


@pytest.mark.parametrize("text,phrase", [
    ("[1, 2]", "is not a model config (a JSON object)"),
    ('{"base_channels": "wide"', "is unreadable"),
])
def test_a_damaged_model_json_is_named(run, text, phrase):
  model_dir, record = run
  path = os.path.join(model_dir, run_dir.MODEL_FILE)
  with open(path, "w") as f:
    f.write(text)
  for read in (lambda: plan(model_dir, record),
               lambda: run_dir.load_trained_model(model_dir)):
    with one_line_error(re.escape(phrase)) as raised:
      read()
    assert path in str(raised.value) and "\n" not in str(raised.value)


def test_a_model_json_of_wrong_types_is_named(run):
  model_dir, record = run
  path = os.path.join(model_dir, run_dir.MODEL_FILE)
  with open(path, "w") as f:
    json.dump(model_config(base_channels="wide"), f)
  with one_line_error(re.escape(path) + " holds a setting of the wrong type"):
    plan(model_dir, record)
  with one_line_error("model.json is not a network config this package "
                      "builds"):
    run_dir.load_trained_model(model_dir)
