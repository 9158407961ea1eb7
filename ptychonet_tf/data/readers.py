"""Readers for scans written by other ptychography software -> `scanfile.Scan`.

Supported files (`read_scan` picks by name, then by content):

- ``.npz``: this project's scan file (`scanfile.load_scan`).
- ``.npz.bz2`` / ``.npz`` with tike's keys: the test data of tike
  (AdvancedPhotonSource/tike): ``data`` [..., N, h, w] photon counts,
  ``scan`` [..., N, 2] positions in object pixels (vertical first; tike
  stores the minimum corner of each probe window) and ``probe``
  [..., h, w] (the first mode is used).
- CXI / HDF5 (``.cxi``, ``.h5``, ``.hdf5``, ``.nxs``): the Coherent X-ray
  Imaging format as written by cdtools, PyNX and others: intensities at
  ``entry_1/data_1/data`` or ``entry_1/instrument_1/detector_1/data``, sample
  translations in metres at ``entry_1/data_1/translation``,
  ``entry_1/sample_1/geometry_1/translation`` or
  ``entry_1/instrument_1/detector_1/translation``, an optional bad-pixel
  ``mask`` (nonzero = bad), and a probe when present.

Conversions applied to external data:

- intensities -> amplitudes sqrt(max(I, 0)); NaN or infinite values are an
  error.
- zero frequency: the scan file wants it at (h//2, w//2). "auto" compares the
  mean pattern's energy near the array centre with that near the corners and
  fftshifts a corner-centred stack; "center" / "corner" force the choice.
- positions -> the layout matrix with `layouts.layout_from_positions` (round,
  shift to >= 0, add `margin` pixels); CXI sample translations (x, y, z)
  are projected on the unit basis vectors of the detector's rows and columns
  (as cdtools' translations_to_pixel does; CXI's default basis is rows along
  -y, columns along -x) and divided by the object-plane pixel size
  lambda * z / (n * detector pixel) unless `pixel_size` is given (near-field
  files need it: the far-field formula does not apply to them).
- no probe in the file: an initial guess, the inverse far field of the mean
  measured amplitude (refine it during the reconstruction).
- the probe (given or guessed) is scaled so that sum |P|^2 equals the mean
  pattern energy sum A_j^2: a unit-amplitude object explains the measured
  power, whatever the units of the file (`scale_probe`).
- bad pixels (CXI mask): replaced by the 3x3 median of their pattern.

Hostile files: every array's declared shape is checked against the memory
this process has before it is read (`limits.check_allocation`; .npz members
through `files.load_arrays`, HDF5 datasets through `_read_dataset`, bz2
streams through `_decompress_bz2`), and the object the positions imply
against `limits.check_object_shape` before any layout is built; values go
through scanfile's `real_array` / `complex_array` checks. Anything else
wrong with a file (a damaged HDF5 tree, a truncated dataset) is a UserError
naming the file.
"""
import bz2
import io
import os

import numpy as np
from scipy import ndimage

from ptychonet_tf.data import scanfile
from ptychonet_tf.utils import files
from ptychonet_tf.utils import limits
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import layouts

ZERO_FREQUENCY = ("auto", "center", "corner")
HDF5_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs")
DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("entry_1/data_1/translation",
                     "entry_1/sample_1/geometry_1/translation",
                     "entry_1/instrument_1/detector_1/translation")
PROBE_PATHS = ("entry_1/instrument_1/source_1/probe",
               "entry_1/instrument_1/source_1/illumination",
               "entry_1/instrument_1/detector_1/probe",
               "entry_1/probe_1/data", "entry_1/probe", "entry_1/image_1/probe")
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
PLANCK_C = 6.62607015e-34 * 299792458.0  # h * c in J m


def read_scan(path, margin=4, pixel_size=None, zero_frequency="auto"):
  """Reads any supported scan file into a validated `scanfile.Scan`.

  Args:
    path: a .npz scan file, tike .npz(.bz2), or CXI/HDF5 file.
    margin: unscanned border in pixels around external scans.
    pixel_size: CXI only: object-plane pixel size in metres (overrides the
      far-field value computed from the file).
    zero_frequency: external files only: "auto", "center" or "corner".

  Raises:
    UserError: missing or unreadable file, missing datasets, bad values.
  """
  if not os.path.isfile(path):
    raise UserError(f"scan file {path} does not exist")
  lower = path.lower()
  if lower.endswith(".bz2"):
    return read_tike(path, margin=margin, zero_frequency=zero_frequency)
  if lower.endswith(HDF5_SUFFIXES) or _is_hdf5(path):
    return read_cxi(path, pixel_size=pixel_size, margin=margin,
                    zero_frequency=zero_frequency)
  if lower.endswith(".npz"):
    if _npz_keys(path) >= {"data", "scan"}:
      return read_tike(path, margin=margin, zero_frequency=zero_frequency)
    return scanfile.load_scan(path)
  raise UserError(f"scan file {path} has an unknown format; expected .npz "
                  f"(scan file or tike), .npz.bz2 (tike) or CXI/HDF5 "
                  f"({', '.join(HDF5_SUFFIXES)})")


def _is_hdf5(path):
  try:
    with open(path, "rb") as f:
      return f.read(8) == b"\x89HDF\r\n\x1a\n"
  except OSError as e:
    raise UserError(f"scan file {path} cannot be read ({e.strerror or e})")


def _npz_keys(path):
  with files.load_arrays(path, f"scan file {path}") as f:
    return set(f.keys())


# Amplitude-sized float32 arrays a reader makes from the data (conversion,
# bad-pixel median, fftshift, square root).
DATA_COPIES = 4


def _decompress_bz2(path):
  """The bytes of a bz2 file, refused once they exceed what memory allows."""
  limit = int(limits.available_memory() * limits.SHARE / DATA_COPIES)
  chunks, size = [], 0
  try:
    with bz2.open(path, "rb") as f:
      while True:
        chunk = f.read(1 << 24)
        if not chunk:
          break
        size += len(chunk)
        if size > limit:
          raise UserError(f"scan file {path} decompresses to more than "
                          f"{limits.format_bytes(limit)}, more than this "
                          f"process can hold")
        chunks.append(chunk)
  except (OSError, EOFError, ValueError) as e:
    raise UserError(f"scan file {path} is not a readable bz2-compressed file "
                    f"({e})") from None
  return io.BytesIO(b"".join(chunks))


# --- Conversions -------------------------------------------------------------


def detect_zero_frequency(intensities):
  """"center" or "corner": where the stack's zero frequency lies.

  Compares the mean pattern's energy within min(h, w)/8 pixels of the array
  centre (h//2, w//2) with that within the same distance of the corners
  (wrapping around); "corner" only when it is clearly (1.5x) larger, since
  detectors record the centred view.

  Args:
    intensities: float [N, h, w] (or amplitudes).
  """
  mean = np.mean(np.asarray(intensities, np.float64), axis=0)
  h, w = mean.shape
  y = np.arange(h)[:, None] - h // 2
  x = np.arange(w)[None, :] - w // 2
  near = np.hypot(y, x) <= min(h, w) / 8.0
  centre = mean[near].sum()
  corner = np.fft.ifftshift(mean)[near].sum()  # the corners moved to the middle
  return "corner" if corner > 1.5 * centre else "center"


def to_amplitudes(intensities, zero_frequency="auto", name="data"):
  """Intensities [N, h, w] -> centred float32 amplitudes sqrt(max(I, 0)).

  Args:
    intensities: real [N, h, w] photon counts or intensities.
    zero_frequency: "auto", "center" or "corner" (see `detect_zero_frequency`).
    name: what to call the data in error messages.

  Raises:
    UserError: not [N, h, w], or NaN / infinite values.
  """
  intensities = np.asarray(intensities)
  if intensities.ndim != 3 or min(intensities.shape) < 1:
    raise UserError(f"{name} has shape {intensities.shape}; expected "
                    f"diffraction patterns [N, h, w]")
  if not np.issubdtype(intensities.dtype, np.number) or np.iscomplexobj(
      intensities):
    raise UserError(f"{name} has dtype {intensities.dtype}; expected real "
                    f"intensities")
  intensities = intensities.astype(np.float32)
  if not np.all(np.isfinite(intensities)):
    raise UserError(f"{name} holds NaN or infinite values")
  if zero_frequency not in ZERO_FREQUENCY:
    raise UserError(f"zero frequency {zero_frequency!r} is not one of "
                    f"{ZERO_FREQUENCY}")
  if zero_frequency == "auto":
    zero_frequency = detect_zero_frequency(intensities)
  if zero_frequency == "corner":
    intensities = np.fft.fftshift(intensities, axes=(-2, -1))
  return np.sqrt(np.maximum(intensities, 0.0)).astype(np.float32)


def probe_from_amplitudes(amplitudes):
  """An initial probe guess: the inverse far field of the mean amplitude.

  Its far-field modulus equals the mean measured amplitude; max |P| = 1.

  Args:
    amplitudes: float32 [N, h, w], detector convention.

  Returns:
    complex64 [h, w].
  """
  mean = np.mean(np.asarray(amplitudes, np.float64), axis=0)
  h, w = mean.shape
  probe = np.fft.ifft2(np.fft.ifftshift(mean)) * np.sqrt(h * w)
  probe = np.fft.fftshift(probe)  # centre the probe in its window
  peak = np.abs(probe).max()
  if peak == 0:
    raise UserError("diffraction data are all zero; cannot guess a probe")
  return (probe / peak).astype(np.complex64)


def scale_probe(probe, amplitudes):
  """The probe scaled so that sum |P|^2 equals the mean pattern energy sum A_j^2.

  With the unitary far field (Parseval) a unit-amplitude object then explains
  the measured power, so objects come out with amplitudes near 1 whatever the
  units of the file's probe (photon counts, arbitrary).

  Args:
    probe: complex [h, w], not all zero.
    amplitudes: float32 [N, h, w].

  Returns:
    complex64 [h, w].
  """
  probe = np.asarray(probe, np.complex128)
  power = float(np.sum(np.abs(probe) ** 2))
  if power == 0:
    raise UserError("the probe is all zero")
  energy = float(np.mean(np.sum(np.square(amplitudes, dtype=np.float64),
                                axis=(1, 2))))
  if energy == 0:
    raise UserError("diffraction data are all zero")
  return (probe * np.sqrt(energy / power)).astype(np.complex64)


def _layout(positions, probe_shape, margin, name):
  """The layout and object of positions [N, 2] (pixels), after checking that
  the object they span is one the solvers can hold (a stray position far
  from the others would make a huge object)."""
  positions = np.asarray(positions)
  if positions.dtype.kind not in "biuf":
    raise UserError(f"{name}: positions have dtype {positions.dtype}; "
                    f"expected real numbers")
  positions = positions.astype(np.float64)
  if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
    raise UserError(f"{name}: positions have shape {positions.shape}; "
                    f"expected [N, 2] (vertical, horizontal) with N >= 1")
  if not np.all(np.isfinite(positions)):
    raise UserError(f"{name}: positions hold NaN or infinite values")
  span = np.ceil(positions.max(axis=0) - positions.min(axis=0))
  extent = [float(s) + p + 2 * margin + 1 for s, p in zip(span, probe_shape)]
  if max(extent) > scanfile.INT32_MAX or (
      extent[0] * extent[1] > limits.MAX_OBJECT_PIXELS):
    raise UserError(f"{name}: the positions span {span[0]:.0f} x "
                    f"{span[1]:.0f} pixels, an object of {extent[0]:.0f} x "
                    f"{extent[1]:.0f} pixels; at most "
                    f"{limits.MAX_OBJECT_PIXELS / 1e6:.0f} Mpixel are "
                    f"supported (a stray position, or positions in other "
                    f"units than pixels?)")
  limits.check_object_shape([int(e) for e in extent],
                            f"{name} (the object the positions span)")
  return layouts.layout_from_positions(positions, probe_shape, margin=margin)


def _scan(amplitudes, positions, probe, margin, name):
  count, h, w = amplitudes.shape
  if len(positions) != count:
    raise UserError(f"{name}: {len(positions)} positions for {count} "
                    f"diffraction patterns; expected one position per pattern")
  if not np.any(amplitudes):
    raise UserError(f"{name}: diffraction data are all zero; a scan needs "
                    f"measured diffraction")
  layout, object_shape = _layout(positions, (h, w), margin, name)
  if probe is None:
    probe = probe_from_amplitudes(amplitudes)
  probe = np.asarray(probe)
  if probe.ndim != 2 or probe.shape != (h, w):
    raise UserError(f"{name}: probe has shape {probe.shape}; expected "
                    f"({h}, {w}) to match the diffraction patterns")
  probe = scanfile.complex_array(probe, f"{name}: probe")
  probe = scale_probe(probe, amplitudes)
  return scanfile.Scan(amplitudes=amplitudes, layout=layout,
                       probe=probe.astype(np.complex64),
                       object_shape=object_shape).validate(name=name)


# --- tike --------------------------------------------------------------------


def read_tike(path, margin=4, zero_frequency="auto"):
  """Reads tike's test-data format (.npz, optionally bz2-compressed).

  Keys: data [..., N, h, w] counts, scan [..., N, 2] (vertical, horizontal)
  positions in pixels, probe [..., h, w] (first mode used; optional).

  Returns:
    scanfile.Scan.
  """
  if not os.path.isfile(path):
    raise UserError(f"scan file {path} does not exist")
  if path.lower().endswith(".bz2"):
    source = _decompress_bz2(path)
  else:
    source = path
  with files.load_arrays(source, f"scan file {path}") as f:
    missing = [k for k in ("data", "scan") if k not in f]
    if missing:
      raise UserError(f"{path} lacks {missing}; expected tike's keys data, "
                      f"scan (and probe)")
    shape, dtype = f.member_header("data")
    limits.check_allocation(shape, np.float32, f"scan file {path}: data",
                            copies=DATA_COPIES)
    arrays = {k: f[k] for k in ("data", "scan", "probe") if k in f}
  data = arrays["data"]
  if data.ndim < 3 or min(data.shape) < 1:
    raise UserError(f"{path}: data has shape {data.shape}; expected "
                    f"[..., N, h, w]")
  h, w = data.shape[-2:]
  amplitudes = to_amplitudes(data.reshape(-1, h, w), zero_frequency,
                             name=f"{path}: data")
  positions = arrays["scan"]
  if positions.ndim < 2 or positions.shape[-1] != 2:
    raise UserError(f"{path}: scan has shape {positions.shape}; expected "
                    f"[..., N, 2] (vertical, horizontal)")
  positions = positions.reshape(-1, 2)
  probe = arrays.get("probe")
  if probe is not None:
    if probe.ndim < 2 or min(probe.shape) < 1:
      raise UserError(f"{path}: probe has shape {probe.shape}; expected "
                      f"[..., {h}, {w}]")
    probe = probe.reshape((-1,) + probe.shape[-2:])[0]
  return _scan(amplitudes, positions, probe, margin, path)


# --- CXI ---------------------------------------------------------------------


def _first(f, candidates):
  for key in candidates:
    if key in f:
      return key
  return None


# Any of these while walking or reading an HDF5 file means a damaged file
# (h5py raises OSError for truncated data, KeyError / RuntimeError for broken
# links, TypeError / ValueError for types it cannot convert).
HDF5_ERRORS = (OSError, KeyError, RuntimeError, TypeError, ValueError,
               AttributeError, IndexError, OverflowError)


def _read_dataset(f, key, path, copies=1, what=None):
  """The numeric array at `key`, its size checked before it is read.

  Raises UserError when `key` is not a dataset of numbers (a group, strings,
  compound or variable-length types), declares more than this process can
  hold, or cannot be read (a truncated file).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  name = what or f"{path}: {key}"
  node = f[key]
  if not isinstance(node, h5py.Dataset):
    raise UserError(f"{name} is a {type(node).__name__}, not a dataset")
  dtype = node.dtype
  if dtype.kind not in "biufc" or dtype.names or dtype.subdtype:
    raise UserError(f"{name} has dtype {dtype}; expected numbers")
  shape = node.shape if node.shape is not None else ()
  # Read as stored, then converted to float32 (at least 4 bytes a value).
  limits.check_allocation(shape, dtype if dtype.itemsize >= 4 else np.float32,
                          name, copies=copies)
  try:
    return np.asarray(node[()])
  except HDF5_ERRORS as e:
    raise UserError(f"{name} cannot be read; the file is truncated or "
                    f"damaged ({' '.join(str(e).split())[:200]})") from None


def _scalar(f, key, path="file"):
  if key not in f:
    return None
  value = _read_dataset(f, key, path)
  if value.dtype.kind == "c":
    raise UserError(f"{path}: {key} has dtype {value.dtype}; expected a real "
                    f"number")
  value = value.astype(np.float64).ravel()
  if value.size and not np.isfinite(value[0]):
    raise UserError(f"{path}: {key} is {value[0]}; expected a finite number")
  return float(value[0]) if value.size else None


def _object_pixel_size(f, shape, path):
  """(dy, dx) in metres: lambda * z / (n * detector pixel), per axis."""
  wavelength = _scalar(f, SOURCE + "/wavelength", path)
  if wavelength is None:
    energy = _scalar(f, SOURCE + "/energy", path)  # J
    wavelength = PLANCK_C / energy if energy else None
  distance = _scalar(f, DETECTOR + "/distance", path)
  pixel_y = _scalar(f, DETECTOR + "/y_pixel_size", path)
  pixel_x = _scalar(f, DETECTOR + "/x_pixel_size", path)
  if None in (wavelength, distance, pixel_y, pixel_x) or min(
      wavelength, distance, pixel_y, pixel_x) <= 0:
    raise UserError(f"{path}: cannot convert translations (metres) to pixels: "
                    f"the file lacks the wavelength (or energy), detector "
                    f"distance or pixel size; pass the object pixel size "
                    f"(pixel_size in metres: reconstruct --pixel_size)")
  h, w = shape
  return wavelength * distance / (h * pixel_y), wavelength * distance / (
      w * pixel_x)


def _detector_axes(f, path="file"):
  """Unit vectors (3,) of the detector's slow (row) and fast (column) axes."""
  key = DETECTOR + "/basis_vectors"
  if key in f:
    basis = scanfile.real_array(_read_dataset(f, key, path),
                                f"{path}: {key}").astype(np.float64)
    if basis.shape == (3, 2):
      basis = basis.T
    if basis.shape == (2, 3):
      lengths = np.linalg.norm(basis, axis=1, keepdims=True)
      if np.all(lengths > 0):
        return basis / lengths
  # CXI default: rows along -y, columns along -x (looking downstream).
  return np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])


def read_cxi(path, pixel_size=None, margin=4, zero_frequency="auto"):
  """Reads a CXI (HDF5) ptychography file.

  Args:
    path: the .cxi/.h5 file.
    pixel_size: object-plane pixel size in metres (float or (dy, dx)); None
      computes the far-field value from wavelength, distance and detector
      pixel size.
    margin: unscanned border in pixels.
    zero_frequency: "auto", "center" or "corner".

  Returns:
    scanfile.Scan (probe from the file or guessed from the data).
  """
  import h5py  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise UserError(f"scan file {path} does not exist")
  try:
    f = h5py.File(path, "r")
  except HDF5_ERRORS as e:
    raise UserError(f"{path} is not a readable HDF5/CXI file ({e})") from None
  try:
    with f:
      (data_key, data, bad, translation_key, translations, pixel_y, pixel_x,
       axes, probe) = _read_cxi_tree(f, path, pixel_size)
  except HDF5_ERRORS as e:
    raise UserError(f"{path} is a damaged HDF5/CXI file "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:200]})"
                    ) from None
  if bad is not None and bad.any():
    cleaned = ndimage.median_filter(data.astype(np.float32), size=(1, 3, 3))
    data = np.where(bad[None], cleaned, data)
  amplitudes = to_amplitudes(data, zero_frequency, name=f"{path}: {data_key}")
  # As cdtools (translations_to_pixel): window index = pinv(basis) @ t; the
  # basis vectors' signs carry the flip between lab and image axes.
  with np.errstate(over="ignore", invalid="ignore"):
    rows = translations @ axes[0] / pixel_y
    cols = translations @ axes[1] / pixel_x
  positions = np.stack([rows, cols], axis=1)
  return _scan(amplitudes, positions, probe, margin, path)


def _read_cxi_tree(f, path, pixel_size):
  """The arrays of an open CXI file, each checked before it is read."""
  import h5py  # pylint: disable=g-import-not-at-top
  data_key = _first(f, DATA_PATHS)
  if data_key is None or not isinstance(f[data_key], h5py.Dataset):
    raise UserError(f"{path} holds no diffraction data; expected a dataset "
                    f"at {' or '.join(DATA_PATHS)}")
  declared = f[data_key].shape or ()
  if not (len(declared) == 3 or (len(declared) == 4 and declared[0] == 1)):
    raise UserError(f"{path}: {data_key} has shape {declared}; expected "
                    f"diffraction patterns [N, h, w]")
  data = _read_dataset(f, data_key, path, copies=DATA_COPIES)
  if data.ndim == 4:
    data = data[0]
  count, h, w = data.shape
  mask_key = DETECTOR + "/mask"
  bad = None
  if mask_key in f:
    mask = _read_dataset(f, mask_key, path)
    if mask.shape == (h, w):
      bad = mask != 0
  translation_key = _first(f, TRANSLATION_PATHS)
  if translation_key is None:
    raise UserError(f"{path} holds no scan positions; expected translations "
                    f"at {' or '.join(TRANSLATION_PATHS)}")
  translations = scanfile.real_array(
      _read_dataset(f, translation_key, path, copies=2),
      f"{path}: {translation_key}", finite=False).astype(np.float64)
  if translations.ndim != 2 or translations.shape[1] not in (2, 3):
    raise UserError(f"{path}: {translation_key} has shape "
                    f"{translations.shape}; expected [N, 3] (x, y, z) metres")
  if not np.all(np.isfinite(translations)):
    raise UserError(f"{path}: {translation_key} holds NaN or infinite values")
  if translations.shape[1] == 2:
    translations = np.pad(translations, ((0, 0), (0, 1)))
  if pixel_size is None:
    pixel_y, pixel_x = _object_pixel_size(f, (h, w), path)
  else:
    pixel_y, pixel_x = np.broadcast_to(np.asarray(pixel_size, np.float64),
                                       (2,))
    if not min(pixel_y, pixel_x) > 0:
      raise UserError(f"pixel size {pixel_size} must be > 0 (metres)")
  axes = _detector_axes(f, path)
  probe_key = _first(f, PROBE_PATHS)
  probe = None
  if probe_key is not None and isinstance(f[probe_key], h5py.Dataset):
    probe = _read_dataset(f, probe_key, path)
    if probe.ndim > 2 and min(probe.shape) > 0:
      probe = probe.reshape((-1,) + probe.shape[-2:])[0]
  return (data_key, data, bad, translation_key, translations, pixel_y,
          pixel_x, axes, probe)
