"""Property-based tests of the scan readers on hostile files (Hypothesis).

Random bytes, random .npz members (any dtype, shape, key, and .npy headers
that declare sizes the file does not hold), and random HDF5 trees at the CXI
paths must each give either a valid scan or one `UserError`, never another
exception, and the process's peak memory must stay under a set amount.

The number of examples per property comes from the environment variable
PTYCHONET_FUZZ_EXAMPLES (default 25: the fast tier, a few seconds); release
checks run it longer (README "Errors"):

  PTYCHONET_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz_readers.py
"""
import bz2
import io
import os
import resource
import struct
import zipfile

import h5py
from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from ptychonet_tf.data import readers
from ptychonet_tf.data import scanfile
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError

EXAMPLES = int(os.environ.get("PTYCHONET_FUZZ_EXAMPLES", "25"))
# Deterministic (the same examples on every run of a setting) and without
# Hypothesis' example database in the repository.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                database=None, suppress_health_check=list(HealthCheck))
# What the readers may allocate while fuzzed (PTYCHONET_MEMORY_LIMIT), and
# the peak growth of the process's memory (ru_maxrss) every property must
# stay under.
MEMORY_LIMIT = 256 << 20
MAX_GROWTH = 768 << 20

SUFFIXES = (".npz", ".cxi", ".h5", ".npz.bz2", ".bin")
NPZ_KEYS = ("amplitudes", "layout", "probe", "object_shape", "object", "data",
            "scan", "other")
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool",
          "complex64", "<U3", "float16")


@pytest.fixture(autouse=True)
def memory_limit(monkeypatch):
  """Readers refuse arrays over MEMORY_LIMIT; the test checks the peak."""
  monkeypatch.setenv(limits.MEMORY_ENV, str(MEMORY_LIMIT))
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  yield
  after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  assert after - before < MAX_GROWTH, (before, after)


def read_or_refuse(path):
  """read_scan(path): a validated Scan, or None after one UserError."""
  try:
    scan = readers.read_scan(path)
  except UserError as e:
    assert str(e) and "\n" not in str(e).strip(), str(e)
    return None
  assert isinstance(scan, scanfile.Scan)
  scan.validate()
  assert np.all(np.isfinite(scan.amplitudes)) and np.any(scan.amplitudes)
  return scan


def _write(tmp_path, name, data):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def _array(dtype, shape, seed, scale):
  rng = np.random.default_rng(seed)
  values = rng.normal(size=shape) * scale
  if dtype == "<U3":
    return values.astype(str).astype("<U3")
  with np.errstate(over="ignore", invalid="ignore"):
    if dtype.startswith("complex"):
      return (values + 1j * values).astype(dtype)
    return values.astype(dtype)


shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)
members = st.dictionaries(
    st.sampled_from(NPZ_KEYS),
    st.tuples(st.sampled_from(DTYPES), shapes, st.integers(0, 2**16),
              st.sampled_from([0.0, 1.0, 1e6, 1e12, 1e40])),
    max_size=6)


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES),
       head=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY",
                             b"\x89HDF\r\n\x1a\n", b"BZh9"]))
def test_random_bytes(tmp_path_factory, data, suffix, head):
  tmp = tmp_path_factory.mktemp("bytes")
  read_or_refuse(_write(tmp, "scan" + suffix, head + data))


@FUZZ
@given(arrays=members, compress=st.booleans(), bz=st.booleans())
def test_random_npz_members(tmp_path_factory, arrays, compress, bz):
  tmp = tmp_path_factory.mktemp("npz")
  buffer = io.BytesIO()
  save = np.savez_compressed if compress else np.savez
  save(buffer, **{k: _array(*v) for k, v in arrays.items()})
  if bz:
    read_or_refuse(_write(tmp, "scan.npz.bz2", bz2.compress(buffer.getvalue())))
  else:
    read_or_refuse(_write(tmp, "scan.npz", buffer.getvalue()))


def _npy_header(shape, descr):
  header = repr({"descr": descr, "fortran_order": False,
                 "shape": tuple(shape)}).encode()
  header += b" " * (-(len(header) + 11) % 64) + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@FUZZ
@given(shape=st.lists(st.integers(0, 2**40), min_size=0, max_size=4),
       descr=st.sampled_from(["<f4", "<c8", "|u1", "<f8", "|O", "<U10"]),
       key=st.sampled_from(["amplitudes", "data", "probe", "layout"]),
       payload=st.binary(max_size=256), stored=st.booleans())
def test_npy_headers_that_lie(tmp_path_factory, shape, descr, key, payload,
                              stored):
  """Members whose header declares any shape (up to terabytes) over a few
  bytes of data; as an .npz member and as the file itself."""
  tmp = tmp_path_factory.mktemp("headers")
  member = _npy_header(shape, descr) + payload
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED if stored
                       else zipfile.ZIP_DEFLATED) as z:
    z.writestr(key + ".npy", member)
    z.writestr("scan.npy", _npy_header((3, 2), "<f8") + bytes(48))
  read_or_refuse(_write(tmp, "scan.npz", buffer.getvalue()))
  try:
    files.load_arrays(_write(tmp, "probe.npy", member), "probe file",
                      allow_npy=True)
  except UserError:
    pass


CXI_PATHS = readers.DATA_PATHS + readers.TRANSLATION_PATHS + (
    readers.PROBE_PATHS[0], readers.DETECTOR + "/mask",
    readers.DETECTOR + "/distance", readers.DETECTOR + "/x_pixel_size",
    readers.DETECTOR + "/y_pixel_size", readers.SOURCE + "/wavelength",
    readers.SOURCE + "/energy", readers.DETECTOR + "/basis_vectors")
nodes = st.dictionaries(
    st.sampled_from(CXI_PATHS),
    st.one_of(
        st.tuples(st.sampled_from(DTYPES), shapes, st.integers(0, 2**16),
                  st.sampled_from([0.0, 1e-6, 1.0, 1e3, 1e30])),
        st.just("group"),
        st.tuples(st.just("declared"),
                  st.lists(st.integers(1, 2**20), min_size=1, max_size=4))),
    max_size=8)


@FUZZ
@given(tree=nodes, truncate=st.integers(0, 4))
def test_random_hdf5_trees(tmp_path_factory, tree, truncate):
  """Datasets of any dtype and shape, groups where datasets belong,
  datasets that declare a large shape but hold no data, and files cut
  short."""
  tmp = tmp_path_factory.mktemp("h5")
  path = str(tmp / "scan.cxi")
  with h5py.File(path, "w") as f:
    for key, node in sorted(tree.items()):
      try:
        if node == "group":
          f.require_group(key)
        elif node[0] == "declared":
          f.create_dataset(key, shape=tuple(node[1]), dtype="f4",
                           chunks=tuple(1 for _ in node[1]))
        else:
          array = _array(*node)
          if array.dtype.kind == "U":
            array = array.astype("S3")
          f[key] = array
      except (ValueError, TypeError, KeyError, OSError):
        pass  # a path below a dataset: skip it
  if truncate:
    size = os.path.getsize(path)
    with open(path, "r+b") as out:
      out.truncate(size * truncate // 5)
  read_or_refuse(path)


def test_a_valid_scan_survives_the_harness(tmp_path):
  """The harness tells a valid file from a refused one."""
  from ptychonet_tf.physics import layouts  # pylint: disable=g-import-not-at-top
  layout, shape = layouts.layout_from_positions(layouts.mesh(2, 2, 3), (8, 8))
  rng = np.random.default_rng(0)
  path = str(tmp_path / "ok.npz")
  np.savez(path, amplitudes=rng.random((4, 8, 8)).astype(np.float32),
           layout=layout, probe=np.ones((8, 8), np.complex64),
           object_shape=np.asarray(shape))
  assert read_or_refuse(path) is not None
  np.savez(path, amplitudes=np.zeros((4, 8, 8), np.float32), layout=layout,
           probe=np.ones((8, 8), np.complex64), object_shape=np.asarray(shape))
  assert read_or_refuse(path) is None
