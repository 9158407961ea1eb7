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

and the one reader of numpy archives, `load_arrays`, which names a file that
is not an .npz/.npy archive in one line instead of numpy's pickle advice.
"""
import io
import json
import os
import shutil
import zipfile

import numpy as np

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
  if make_parent:
    os.makedirs(parent, exist_ok=True)
  tmp = temp_path(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
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
  if os.path.exists(final):
    old = f"{final}.old-{os.getpid()}"
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, final)
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


def load_arrays(source, what, allow_npy=False):
  """np.load(source, allow_pickle=False) of an .npz (or .npy) archive.

  Args:
    source: a path or an io.BytesIO.
    what: how to name the file in errors, e.g. "scan file scan.npz".
    allow_npy: also accept a single-array .npy file.

  Returns:
    np.lib.npyio.NpzFile (use it as a context manager) or, for .npy, an
    ndarray.

  Raises:
    UserError: the file is not such an archive (one line saying what it looks
      like) or is damaged.
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
  try:
    return np.load(source, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{what} is a damaged numpy archive ({e})")
