"""Atomic file writes: every output goes to a temp name and is renamed when complete.

A reader (or a re-run after a crash) never sees a half-written file: the data
go to a temporary name in the same folder, which `os.replace` then renames
over the final name in one step. A temp file left by a killed writer is
overwritten by the next write of the same file.

  atomic_write(path, write)   the one primitive: write(tmp_path), then rename
  write_text(path, text)      text files (flags, markdown, JSON)
  write_json(path, obj)
  save_npz(path, **arrays)    numpy .npz files
  save_figure(path, fig)      matplotlib figures (format from the extension)
  replace_dir(tmp, final)     swap a finished temp directory into place

A write that fails for a reason outside the program (a full or read-only
disk, a missing permission, a file-size limit) ends in one UserError naming
the path and the cause (`write_error`), whether Python (OSError) or
TensorFlow (ResourceExhaustedError, PermissionDeniedError, ...) raised it;
`check_writable` finds a folder that cannot be written before a long
computation.

`load_arrays` is the one reader of numpy archives: it names a file that is
not an .npz/.npy archive in one line instead of numpy's pickle advice, and
reads every array's header before the array, so that a shape the file
declares is checked against the memory this process has
(`limits.check_allocation`) and against the bytes the file holds.

`dataset_file` is the one check of a file name read from a dataset's own
metadata (dataset.json shard names, a tfds `filepathTemplate`): a plain name
inside the folder, never `../elsewhere` or an absolute path.
"""
import errno
import io
import json
import os
import shutil
import sys
import zipfile
import zlib

import numpy as np

from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError

_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (empty: 05 06)
_NPY_MAGIC = b"\x93NUMPY"
_KNOWN_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\x89HDF", "an HDF5 file"),
                (b"\xff\xd8\xff", "a JPEG image"), (b"BZh", "a bz2 archive"),
                (b"\x1f\x8b", "a gzip archive"))


def temp_path(path):
  """The temp name of `path`: `<path>.tmp` (writers that infer a format from
  the extension must be told the format explicitly)."""
  return f"{path}.tmp"


def atomic_write(path, write, make_parent=False):
  """Calls write(tmp_path), then renames tmp_path to `path`.

  Args:
    path: the final file name.
    write: callable(tmp_path) that writes the whole file.
    make_parent: create the parent folder first.

  Returns:
    path.
  """
  parent = os.path.dirname(os.path.abspath(path))
  tmp = temp_path(path)
  try:
    if make_parent:
      os.makedirs(parent, exist_ok=True)
    write(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    try:
      if os.path.exists(tmp):
        os.remove(tmp)
    except OSError:
      pass  # a read-only disk: the message below names the cause
    error = write_error(e, path)
    if error is not None:
      raise error from None
    raise
  return path


# TensorFlow's errors for a failed write (looked up by name: this module
# does not import TensorFlow).
_TF_WRITE_ERRORS = ("ResourceExhaustedError", "PermissionDeniedError",
                    "UnavailableError", "FailedPreconditionError",
                    "UnknownError", "InternalError", "AbortedError",
                    "NotFoundError")
_CAUSES = (("No space left", "no space left on the disk"),
           ("Disk quota", "disk quota exceeded"),
           ("Read-only file system", "the file system is read-only"),
           ("Permission denied", "permission denied"),
           ("File too large", "file too large (a file-size limit)"))


def write_error(error, path):
  """A UserError naming `path` and the cause of a failed write, or None when
  `error` is not a failure of the disk (e.g. a bug, a UserError, Ctrl-C)."""
  if isinstance(error, UserError):
    return None
  if isinstance(error, OSError):
    name = path
    cause = (os.strerror(error.errno) if error.errno else str(error)).strip()
    if error.errno == errno.ENOSPC:
      cause = "no space left on the disk"
    elif error.errno == errno.EROFS:
      cause = "the file system is read-only"
    return UserError(f"cannot write {name}: {cause}")
  tf = sys.modules.get("tensorflow")
  errors = getattr(tf, "errors", None)
  if errors is None or not isinstance(error, errors.OpError):
    return None
  message = str(getattr(error, "message", error))
  for phrase, cause in _CAUSES:
    if phrase.lower() in message.lower():
      return UserError(f"cannot write {path}: {cause}")
  if type(error).__name__ not in _TF_WRITE_ERRORS:
    return None
  if type(error).__name__ in ("ResourceExhaustedError", "PermissionDeniedError"):
    first = message.strip().splitlines()[0][:200] if message.strip() else ""
    return UserError(f"cannot write {path}: {first or type(error).__name__}")
  return None


def check_writable(path, what="output"):
  """Raises UserError unless a file can be written at `path` (a file path):
  writes and removes a small temp file in its folder (or, while that does
  not exist yet, in the nearest folder above it that does; nothing is
  created), so a read-only or full disk is found before a long
  computation."""
  if os.path.isdir(path):
    raise UserError(f"{what} {path} is a directory; expected a file name")
  folder = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise UserError(f"{what} {path}: {folder} is a file; expected a directory")
  probe = os.path.join(folder, f".write-test-{os.getpid()}.tmp")
  try:
    with open(probe, "wb") as f:
      f.write(b"\0" * 4096)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise write_error(e, path) from None
  finally:
    try:
      os.remove(probe)
    except OSError:
      pass
  return path


def check_writable_dir(folder, what="output folder"):
  """Raises UserError unless files can be written in `folder` (or, while it
  does not exist, the folder that would hold it); a file in its place is
  named as such."""
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise UserError(f"{what} {folder} is a file; expected a directory")
  try:
    check_writable(os.path.join(folder, ".probe"), what)
  except UserError as e:  # name the folder, not the probe file
    raise UserError(str(e).replace(os.path.join(folder, ".probe"), folder)
                    ) from None
  return folder


def dataset_file(folder, name, what):
  """os.path.join(folder, name) for a file name read from a dataset's own
  metadata; raises UserError unless `name` is a plain relative name inside
  `folder` (no absolute path, no '..', no symlink leading out)."""
  if not isinstance(name, str) or not name or "\0" in name:
    raise UserError(f"{what}: file name {name!r} is not a file name")
  parts = name.replace("\\", "/").split("/")
  if os.path.isabs(name) or ".." in parts:
    raise UserError(f"{what}: file name {name!r} points outside the dataset "
                    f"folder {folder}; expected a name inside it")
  path = os.path.join(folder, name)
  real, root = os.path.realpath(path), os.path.realpath(folder)
  if os.path.commonpath([real, root]) != root:
    raise UserError(f"{what}: file {name!r} leads outside the dataset folder "
                    f"{folder} (a symbolic link); expected a file inside it")
  return path


def write_text(path, text, make_parent=False):
  """Writes `text` to `path` atomically."""
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  return atomic_write(path, write, make_parent)


def write_json(path, obj, make_parent=False, **kwargs):
  """Writes `obj` as indented JSON (plus a newline) atomically."""
  kwargs.setdefault("indent", 2)
  return write_text(path, json.dumps(obj, **kwargs) + "\n", make_parent)


def save_npz(path, **arrays):
  """np.savez(path, **arrays) atomically, under exactly the name `path`."""
  def write(tmp):
    with open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
      np.savez(f, **arrays)
  return atomic_write(path, write)


def save_figure(path, fig, make_parent=True, **kwargs):
  """fig.savefig to `path` atomically, in the format its extension names."""
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs),
                      make_parent)


def save_image(path, image, **kwargs):
  """matplotlib.pyplot.imsave to `path` atomically (format from the extension)."""
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  return atomic_write(path, lambda tmp: plt.imsave(tmp, image, format=fmt,
                                                   **kwargs))


def replace_dir(tmp, final):
  """Moves the finished directory `tmp` to `final`, replacing any old one.

  The old directory is first renamed aside, so `final` is at every moment
  either the complete old or the complete new directory.
  """
  try:
    if os.path.exists(final):
      old = f"{final}.old-{os.getpid()}"
      os.replace(final, old)
      os.replace(tmp, final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, final)
  except OSError as e:
    raise write_error(e, final) from None
  return final


def _head(source, size=8):
  if isinstance(source, io.BytesIO):
    return source.getvalue()[:size]
  with open(source, "rb") as f:
    return f.read(size)


def _looks_like(head):
  for magic, kind in _KNOWN_MAGIC:
    if head.startswith(magic):
      return kind
  try:
    head.decode("ascii")
    return "text" if head else "empty"
  except UnicodeDecodeError:
    return "something else"


class CheckedNpz(np.lib.npyio.NpzFile):
  """An .npz archive whose members are checked before they are read.

  `archive[key]` reads the member's .npy header first and raises UserError
  (naming the file and member) for a member that is not a numpy array, an
  object (pickle) dtype, a shape whose bytes exceed what the member holds
  (truncated or lying header) or what this process can allocate
  (`limits.check_allocation`), and for a member that fails to decompress.
  """

  def __init__(self, fid, what, **kwargs):
    super().__init__(fid, **kwargs)
    self.what = what

  def member_header(self, key):
    """(shape, dtype) from the .npy header of member `key`, checked."""
    name = self._files.get(key)
    if name is None:
      raise KeyError(f"{key} is not a file in the archive")
    what = f"{self.what}: array {key!r}"
    try:
      info = self.zip.getinfo(name)
      with self.zip.open(name) as member:
        magic = member.read(len(np.lib.format.MAGIC_PREFIX))
        if magic != np.lib.format.MAGIC_PREFIX:
          raise UserError(f"{what} is not a numpy array (.npy member)")
        member.seek(0)
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
          shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
          shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        header_end = member.tell()
    except UserError:
      raise
    except (OSError, ValueError, EOFError, KeyError, TypeError,
            SyntaxError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile, MemoryError) as e:
      raise UserError(f"{what} has a damaged header ({_one_line(e)})") from None
    if dtype.hasobject or dtype.itemsize == 0 and dtype.kind == "V":
      raise UserError(f"{what} has dtype {dtype}; expected a numeric array "
                      f"(object arrays are not read)")
    declared = limits.nbytes(shape, dtype.itemsize)
    if declared > info.file_size - header_end:
      raise UserError(f"{what} declares {limits.format_shape(shape)} "
                      f"{dtype} ({limits.format_bytes(declared)}) but holds "
                      f"{limits.format_bytes(max(0, info.file_size - header_end))}"
                      f"; the file is truncated or damaged")
    limits.check_allocation(shape, dtype, what)
    return shape, dtype

  def __getitem__(self, key):
    self.member_header(key)
    try:
      return super().__getitem__(key)
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile,
            NotImplementedError, RuntimeError) as e:
      raise UserError(f"{self.what}: array {key!r} is damaged "
                      f"({_one_line(e)})") from None


def _one_line(error):
  text = " ".join(str(error).split())
  return text if len(text) <= 200 else text[:197] + "..."


def _check_npy(source, what):
  """Checks the header of a single-array .npy file against its size and the
  memory; returns (shape, dtype)."""
  try:
    if isinstance(source, io.BytesIO):
      fp, size = source, len(source.getvalue())
      fp.seek(0)
    else:
      fp, size = open(source, "rb"), os.path.getsize(source)
    try:
      version = np.lib.format.read_magic(fp)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
      else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
      header_end = fp.tell()
    finally:
      if not isinstance(source, io.BytesIO):
        fp.close()
  except (OSError, ValueError, EOFError, TypeError, SyntaxError,
          RuntimeError) as e:
    raise UserError(f"{what} has a damaged .npy header ({_one_line(e)})") from None
  if dtype.hasobject:
    raise UserError(f"{what} has dtype {dtype}; expected a numeric array "
                    f"(object arrays are not read)")
  declared = limits.nbytes(shape, dtype.itemsize)
  if declared > size - header_end:
    raise UserError(f"{what} declares {limits.format_shape(shape)} {dtype} "
                    f"({limits.format_bytes(declared)}) but holds "
                    f"{limits.format_bytes(max(0, size - header_end))}; the "
                    f"file is truncated or damaged")
  limits.check_allocation(shape, dtype, what)
  return shape, dtype


def load_arrays(source, what, allow_npy=False):
  """np.load(source, allow_pickle=False) of an .npz (or .npy) archive.

  Args:
    source: a path or an io.BytesIO.
    what: how to name the file in errors, e.g. "scan file scan.npz".
    allow_npy: also accept a single-array .npy file.

  Returns:
    `CheckedNpz` (an np.lib.npyio.NpzFile; use it as a context manager) or,
    for .npy, an ndarray.

  Raises:
    UserError: the file is not such an archive (one line saying what it looks
      like), is damaged, or declares an array larger than the file or the
      memory.
  """
  try:
    head = _head(source)
  except OSError as e:
    raise UserError(f"{what} cannot be read ({e})")
  kinds = "an NPZ file (numpy.savez archive)" + (" or NPY file" if allow_npy
                                                  else "")
  if not (head.startswith(_NPZ_MAGIC) or
          (allow_npy and head.startswith(_NPY_MAGIC))):
    raise UserError(f"{what} is not {kinds}; it looks like {_looks_like(head)}")
  if isinstance(source, io.BytesIO):
    source.seek(0)
  if head.startswith(_NPY_MAGIC):
    _check_npy(source, what)
    if isinstance(source, io.BytesIO):
      source.seek(0)
    try:
      return np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError) as e:
      raise UserError(f"{what} is a damaged numpy file ({_one_line(e)})") from None
  owned = not isinstance(source, io.BytesIO)
  fid = None if owned else source
  try:
    if owned:
      fid = open(source, "rb")
    return CheckedNpz(fid, what, own_fid=owned, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
          NotImplementedError, RuntimeError) as e:
    if owned and fid is not None:
      fid.close()
    raise UserError(f"{what} is a damaged numpy archive ({_one_line(e)})") from None
