"""make_tfrecords --runner=beam: Apache Beam's DirectRunner writes the local
writer's bytes, resumes after a kill, and its options are checked before a
file is written. Skipped without the `beam` extra (make test installs it)."""
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import GEOMETRY_FLAGS, REPO, assert_one_line_error, run_cli

from ptychonet_tf.utils.errors import UserError

beam_writer = pytest.importorskip("ptychonet_tf.data.beam_writer")
if beam_writer.beam is None:
  pytest.skip("apache-beam is not installed (pip install '.[beam]')",
              allow_module_level=True)

MAKE = ["tools/make_tfrecords.py", *GEOMETRY_FLAGS, "--num_train=6",
        "--num_test=2", "--num_shards=3", "--noprogress"]
# Large enough patterns that the pipeline is still writing when killed.
SLOW_MAKE = ["tools/make_tfrecords.py", "--flagfile=configs/small_dense.flags",
             "--num_train=8", "--num_test=2", "--num_shards=8", "--noprogress"]
BEAM = ["--runner=beam", "--workers=2"]


def _digests(folder):
  """sha256 of the shards and tfds metadata of a dataset folder."""
  names = [os.path.basename(p) for p in glob.glob(f"{folder}/*.tfrecord")]
  names += ["geometry.npz", "dataset_info.json", "features.json",
            "metadata.json"]
  out = {}
  for name in sorted(names):
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


def _info_without_flags(folder):
  with open(os.path.join(folder, "dataset.json")) as f:
    info = json.load(f)
  info.pop("flags")
  return info


# One Beam worker runs the pipeline in the command's process (in_memory);
# two are worker processes that each import TensorFlow (multi_processing:
# about 15 s more on an AVX2-only CPU), the release tier's.
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.release)])
def test_beam_writes_the_local_writers_bytes_that_tfds_reads(tmp_path, workers):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
  result = run_cli([*MAKE, f"--out_dir={local}", "--workers=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_cli([*MAKE, f"--out_dir={beam}", "--runner=beam",
                    f"--workers={workers}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "5 shards written, 0 kept" in result.stdout, result.stdout
  assert _digests(beam) == _digests(local)
  assert len(_digests(beam)) == 9
  assert _info_without_flags(beam) == _info_without_flags(local)
  result = run_cli(["tools/check_tfrecords.py", f"--data_dir={beam}",
                    "--parse"])
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder_from_directory(beam)
  assert builder.info.splits["train"].num_examples == 6
  assert builder.info.splits["test"].num_examples == 2


# Release checks (`make test-release`): the kill and the full disk are the
# local writer's (tests/test_tfrecords.py, tests/test_bad_inputs.py) through
# Beam's runner, whose worker processes each import TensorFlow: 35-40 s each
# on an AVX2-only CPU, a sixth of make test's budget together.
@pytest.mark.slow
@pytest.mark.release
def test_a_killed_beam_run_resumes_to_the_same_bytes(tmp_path):
  out = str(tmp_path / "beam")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.Popen([sys.executable, *SLOW_MAKE, f"--out_dir={out}",
                           *BEAM], cwd=REPO, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 240
    while not glob.glob(f"{out}/*.tfrecord"):
      assert proc.poll() is None, "the pipeline ended before the first shard"
      assert time.monotonic() < deadline, "no shard after 240 s"
      time.sleep(0.2)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers
    proc.wait()
  written = len(glob.glob(f"{out}/*.tfrecord"))
  assert 1 <= written < 10, written
  assert not os.path.exists(f"{out}/dataset_info.json")  # tfds: incomplete
  result = run_cli([*SLOW_MAKE, f"--out_dir={out}", *BEAM])
  assert result.returncode == 0, result.stderr[-3000:]
  kept = int(result.stdout.split(" shards written, ")[1].split(" kept")[0])
  assert kept >= 1, result.stdout
  local = str(tmp_path / "local")
  # One local worker: the bytes do not depend on the worker count
  # (tests/test_tfrecords.py), and no worker processes start.
  result = run_cli([*SLOW_MAKE, f"--out_dir={local}", "--workers=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert _digests(out) == _digests(local)
  left = [n for n in os.listdir(out) if ".tmp" in n]
  assert not left, left


def test_beam_options_beam_does_not_know_are_named():
  with pytest.raises(UserError, match="Beam knows no option --bogus_flag"):
    beam_writer.pipeline_options("--runner=DirectRunner --bogus_flag=3")
  with pytest.raises(UserError, match="'DirectRunner' is not an option"):
    beam_writer.pipeline_options("DirectRunner")
  with pytest.raises(UserError, match="No closing quotation"):
    beam_writer.pipeline_options("--runner='DirectRunner")
  options = beam_writer.pipeline_options(beam_writer.default_options(2))
  assert options.get_all_options()["direct_num_workers"] == 2


def test_without_beam_the_runner_is_refused_in_one_line(monkeypatch, tmp_path):
  monkeypatch.setattr(beam_writer, "beam", None)
  with pytest.raises(UserError, match=r"needs Apache Beam: pip install"):
    beam_writer.write_dataset(None, str(tmp_path / "out"), options=None)
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_beam_flags_are_checked_before_the_folder_is_touched(tmp_path):
  out = tmp_path / "out"
  result = run_cli([*MAKE, f"--out_dir={out}", "--beam_options=--runner=X"])
  assert_one_line_error(result, "--beam_options needs --runner=beam")
  result = run_cli([*MAKE, f"--out_dir={out}", "--runner=beam",
                    "--beam_options=--runner=DirectRunner --nope=1"])
  assert_one_line_error(result, "Beam knows no option --nope")
  assert not out.exists()


def test_a_workers_error_is_named_in_one_line():
  error = RuntimeError(
      "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
      "ptychonet_tf.utils.errors.UserError: cannot write a.tfrecord: no space "
      "left on the disk [while running 'SimulateAndWrite']")
  assert beam_writer.worker_error(error) == (
      "cannot write a.tfrecord: no space left on the disk [while running "
      "'SimulateAndWrite']")
  assert beam_writer.worker_error(RuntimeError("x\nValueError: bad")) == (
      "ValueError: bad")
  assert beam_writer.worker_error(RuntimeError("plain text")) == "plain text"


@pytest.mark.slow
@pytest.mark.release
def test_a_full_disk_under_beam_is_one_line_and_resumes(tmp_path):
  out = tmp_path / "full"
  # Shards of 1.8 MB against a 1 MB file-size limit (Beam's own files fit).
  args = ["tools/make_tfrecords.py", "--flagfile=configs/small_dense.flags",
          "--num_train=2", "--num_test=1", "--num_shards=2", "--noprogress",
          f"--out_dir={out}", *BEAM]
  result = run_cli(args, limits={"fsize": 1_000_000}, timeout=240)
  assert_one_line_error(result, "cannot write", "file too large",
                        "run the same command again to resume")
  assert not [n for n in os.listdir(out) if n.endswith(".error")]
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
