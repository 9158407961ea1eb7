r"""A small TF Serving REST client for exported PtychoNet models.

Prints the JSON request for one or more scan files (docs/scan_format.md):

  python tools/serving_client.py scan.npz > request.json

or posts it and saves the reconstruction:

  python tools/serving_client.py scan.npz \
      --url=http://localhost:8501/v1/models/ptychonet:predict --out=recon.npz

The request is TF Serving's columnar form, {"signature_name":
"serving_default", "inputs": {"amplitudes": [batch, N, h, w]}}; the response's
"outputs" hold "amplitude" and "phase" [batch, H, W], saved by --out as float32
arrays (plus "object" = amplitude * exp(i phase), complex64).

`--signature=any_scan` serves a scan of any positions and probe (a model
exported by this package reconstructs it without retraining,
docs/serving.md): one scan per request, whose inputs are "amplitudes" [1, N,
h, w], "positions" [1, N, 2] (the (top, left) of the scan file's layout
rows) and "probe" [h, w, 2] (real and imaginary planes). The model answers
the object that just covers the positions; --out saves it placed in the
scan file's object (0 outside the scanned rectangle), as serving_default's.
With `--passes=P` (P > 1) it asks the `any_scan_passes` signature, which
runs the model's refinement steps P times (input "passes", an integer).

Needs only numpy and absl (no TensorFlow, no project import).

The server is not trusted: only http(s) URLs are posted to; the response
body is read up to a cap (--max_response_mb, and no more than the numbers
the request's object size can need); its outputs must be finite numbers of
the shape [batch, H, W] the scans' object_shape gives; anything else ends in
one line `error: ...` and exit status 2, and no file is left behind (the
.npz goes to a temp name in --out's folder and is renamed when complete).
"""
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from absl import app
from absl import flags
import numpy as np

flags.DEFINE_string("url", None,
                    "TF Serving predict URL, e.g. http://localhost:8501/v1/"
                    "models/ptychonet:predict; without it the request is printed.")
flags.DEFINE_string("out", None, "With --url: write the reconstruction to this .npz.")
flags.DEFINE_string("signature", "serving_default", "Signature name.")
flags.DEFINE_integer("passes", 1, "--signature=any_scan: passes of the "
                     "model's refinement steps (> 1: the any_scan_passes "
                     "signature).")
flags.DEFINE_float("timeout", 120.0, "HTTP timeout (s).")
flags.DEFINE_float("max_response_mb", 256.0,
                   "Largest response body read (MB); a larger one is refused.")
FLAGS = flags.FLAGS

# A scan file's amplitudes are read only up to this size (a request of more
# is too large to post as JSON anyway).
MAX_SCAN_BYTES = 1 << 30
# Bytes of JSON one float of the response may take ("-1.2345678e-05, ").
BYTES_PER_NUMBER = 32


class ClientError(Exception):
  pass


def _member_shape(f, key, path):
  """The shape and dtype an .npz member declares, checked against its size."""
  name = key + ".npy"
  try:
    info = f.zip.getinfo(name)
    with f.zip.open(name) as member:
      version = np.lib.format.read_magic(member)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
      else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
      room = info.file_size - member.tell()
  except (OSError, ValueError, KeyError, EOFError, SyntaxError, TypeError) as e:
    raise ClientError(f"scan file {path}: {key} is not a readable array ({e})")
  size = int(np.prod(shape, dtype=object)) * dtype.itemsize
  if dtype.hasobject or size > room or size > MAX_SCAN_BYTES:
    raise ClientError(f"scan file {path}: {key} declares {shape} {dtype}, "
                      f"{size} bytes; it holds {room} (at most "
                      f"{MAX_SCAN_BYTES} are read)")
  return shape, dtype


def load_scan(path):
  """(float32 [N, h, w] amplitudes, (H, W) object shape) of a scan .npz."""
  if not os.path.isfile(path):
    raise ClientError(f"scan file {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as f:
      if "amplitudes" not in f:
        raise ClientError(f"scan file {path} has no 'amplitudes' array "
                          f"(see docs/scan_format.md)")
      _member_shape(f, "amplitudes", path)
      amplitudes = np.asarray(f["amplitudes"])
      if "object_shape" in f:
        _member_shape(f, "object_shape", path)
        object_shape = np.asarray(f["object_shape"]).ravel()
      else:
        _member_shape(f, "layout", path)
        layout = np.asarray(f["layout"])
        object_shape = (layout[:, [1, 3]].max(axis=0) if layout.ndim == 2
                        and layout.shape[1:] == (4,) and len(layout) else ())
  except ClientError:
    raise
  except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
    raise ClientError(f"scan file {path} is not a readable .npz file ({e})")
  if amplitudes.ndim != 3 or amplitudes.dtype.kind not in "biuf":
    raise ClientError(f"scan file {path}: amplitudes are {amplitudes.shape} "
                      f"{amplitudes.dtype}; expected real numbers [N, h, w]")
  if len(object_shape) != 2 or not all(0 < int(s) <= 1 << 15
                                       for s in object_shape):
    raise ClientError(f"scan file {path}: object_shape is "
                      f"{list(object_shape)}; expected (H, W)")
  amplitudes = amplitudes.astype(np.float32)
  if not np.all(np.isfinite(amplitudes)):
    raise ClientError(f"scan file {path}: amplitudes hold NaN or infinite "
                      f"values")
  return amplitudes, tuple(int(s) for s in object_shape)


def load_geometry(path, count, probe_shape, object_shape):
  """(float32 [N, 2] window corners, float32 [h, w, 2] probe planes) of a
  scan .npz, what the any_scan signature takes besides the amplitudes."""
  try:
    with np.load(path, allow_pickle=False) as f:
      for key in ("layout", "probe"):
        if key not in f:
          raise ClientError(f"scan file {path} has no {key!r} array, which "
                            f"--signature=any_scan sends")
        _member_shape(f, key, path)
      layout, probe = np.asarray(f["layout"]), np.asarray(f["probe"])
  except ClientError:
    raise
  except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
    raise ClientError(f"scan file {path} is not a readable .npz file ({e})")
  if (layout.shape != (count, 4) or layout.dtype.kind not in "iu" or
      np.any(layout < 0) or np.any(layout[:, [1, 3]] > np.asarray(
          object_shape))):
    raise ClientError(f"scan file {path}: layout is {layout.shape} "
                      f"{layout.dtype}; expected integer rows (top, bottom, "
                      f"left, right) inside the {list(object_shape)} object "
                      f"for its {count} patterns")
  if probe.shape != tuple(probe_shape) or probe.dtype.kind not in "fc":
    raise ClientError(f"scan file {path}: probe is {probe.shape} "
                      f"{probe.dtype}; expected numbers of the pattern size "
                      f"{list(probe_shape)}")
  if not np.all(np.isfinite(probe)):
    raise ClientError(f"scan file {path}: probe holds NaN or infinite values")
  probe = probe.astype(np.complex64)
  return (layout[:, [0, 2]].astype(np.float32),
          np.stack([probe.real, probe.imag], -1).astype(np.float32))


def any_scan_request(path, passes=1):
  """(request, layout corner of the response, object shape) for one scan
  file and the any_scan signature (any_scan_passes when `passes` > 1)."""
  amplitudes, object_shape = load_scan(path)
  corners, probe = load_geometry(path, len(amplitudes), amplitudes.shape[1:],
                                 object_shape)
  request = {"signature_name": "any_scan",
             "inputs": {"amplitudes": amplitudes[None].tolist(),
                        "positions": corners[None].tolist(),
                        "probe": probe.tolist()}}
  if passes != 1:
    request["signature_name"] = "any_scan_passes"
    request["inputs"]["passes"] = int(passes)
  origin = corners.min(axis=0).astype(int)
  span = corners.max(axis=0).astype(int) - origin + amplitudes.shape[1:]
  return request, tuple(origin), tuple(int(s) for s in span), object_shape


def place(arrays, origin, object_shape):
  """[1, H', W'] arrays of the scanned rectangle -> [1, H, W], 0 outside."""
  top, left = origin
  placed = []
  for array in arrays:
    canvas = np.zeros((1, *object_shape), np.float32)
    canvas[:, top:top + array.shape[1], left:left + array.shape[2]] = array
    placed.append(canvas)
  return placed


def load_amplitudes(path):
  """float32 [N, h, w] amplitudes of a scan .npz file."""
  return load_scan(path)[0]


def read_scans(paths):
  """(float32 [batch, N, h, w], (H, W)): scans of one geometry."""
  scans = [load_scan(p) for p in paths]
  for path, (amps, shape) in zip(paths[1:], scans[1:]):
    if amps.shape != scans[0][0].shape or shape != scans[0][1]:
      raise ClientError(f"scan file {path} has amplitudes {amps.shape} on a "
                        f"{shape} object; {paths[0]} has {scans[0][0].shape} "
                        f"on {scans[0][1]}; a request holds scans of one "
                        f"geometry")
  return np.stack([a for a, _ in scans]), scans[0][1]


def build_request(paths, signature="serving_default"):
  """The REST request dict for the scans in `paths` (equal shapes)."""
  return request_for(read_scans(paths)[0], signature)


def request_for(amplitudes, signature="serving_default"):
  return {"signature_name": signature,
          "inputs": {"amplitudes": amplitudes.tolist()}}


def check_url(url):
  """Raises ClientError unless url is http:// or https:// with a host."""
  parts = urllib.parse.urlsplit(url)
  if parts.scheme not in ("http", "https") or not parts.netloc:
    raise ClientError(f"--url={url} is not an http:// or https:// URL")
  return url


def check_out(path):
  """Raises ClientError unless path names a file in an existing folder."""
  if os.path.isdir(path):
    raise ClientError(f"--out={path} is a directory; expected a .npz file name")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise ClientError(f"--out={path}: folder {parent} does not exist")
  return path


def post(url, request, timeout, max_bytes):
  """The parsed JSON response (a dict), its body read up to max_bytes."""
  check_url(url)
  data = json.dumps(request).encode()
  req = urllib.request.Request(url, data=data,
                               headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=timeout) as response:
      if response.geturl() and urllib.parse.urlsplit(
          response.geturl()).scheme not in ("http", "https"):
        raise ClientError(f"{url} redirected to {response.geturl()}, not an "
                          f"http(s) URL")
      body = response.read(max_bytes + 1)
  except urllib.error.HTTPError as e:
    detail = e.read(2000).decode(errors="replace").strip().replace("\n", " ")
    raise ClientError(f"{url} answered HTTP {e.code}: {detail[:300]}")
  except (urllib.error.URLError, OSError, ValueError) as e:
    raise ClientError(f"cannot reach {url} ({e})")
  if len(body) > max_bytes:
    raise ClientError(f"{url} answered more than {max_bytes} bytes; the "
                      f"reconstruction of this request needs fewer "
                      f"(--max_response_mb)")
  try:
    response = json.loads(body)
  except (ValueError, RecursionError) as e:
    raise ClientError(f"{url} did not answer JSON ({type(e).__name__}: "
                      f"{str(e)[:100]})")
  if not isinstance(response, dict):
    raise ClientError(f"{url} answered a JSON {type(response).__name__}; "
                      f"expected an object with \"outputs\"")
  return response


def outputs_of(response, shape):
  """float32 amplitude and phase [batch, H, W] of a response, checked."""
  outputs = response.get("outputs")
  if not isinstance(outputs, dict) or not {"amplitude", "phase"} <= set(outputs):
    raise ClientError(f"the response holds no outputs amplitude and phase: "
                      f"{str(response)[:200]}")
  arrays = []
  for key in ("amplitude", "phase"):
    try:
      array = np.asarray(outputs[key], np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
      raise ClientError(f"the response's {key} is not an array of numbers "
                        f"({type(e).__name__}: {str(e)[:100]})")
    if array.shape != tuple(shape):
      raise ClientError(f"the response's {key} has shape {list(array.shape)}; "
                        f"expected {list(shape)} for this request")
    if not np.all(np.isfinite(array)):
      raise ClientError(f"the response's {key} holds NaN or infinite values")
    arrays.append(array)
  return arrays


def save_response(response, path, shape, origin=None, object_shape=None):
  """Writes the checked outputs to path (temp name in its folder, then
  rename); returns their shape. With `origin`, the outputs cover the
  scanned rectangle at origin (an any_scan answer) and are placed in
  `object_shape`."""
  amplitude, phase = outputs_of(response, shape)
  if origin is not None:
    amplitude, phase = place((amplitude, phase), origin, object_shape)
  check_out(path)
  folder = os.path.dirname(os.path.abspath(path))
  handle, tmp = tempfile.mkstemp(prefix=".serving-", suffix=".npz.tmp",
                                 dir=folder)
  try:
    with os.fdopen(handle, "wb") as f:
      np.savez(f, amplitude=amplitude, phase=phase,
               object=(amplitude * np.exp(1j * phase)).astype(np.complex64))
    os.replace(tmp, path)
  except OSError as e:
    raise ClientError(f"cannot write {path}: {e.strerror or e}")
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return amplitude.shape


def main(argv):
  try:
    if len(argv) < 2:
      raise ClientError("give one or more scan .npz files")
    if FLAGS.out and not FLAGS.url:
      raise ClientError("--out needs --url (without it the request is printed)")
    if FLAGS.url:
      check_url(FLAGS.url)
    if FLAGS.out:
      check_out(FLAGS.out)
    if not FLAGS.max_response_mb > 0:
      raise ClientError(f"--max_response_mb={FLAGS.max_response_mb} must be "
                        f"> 0")
    if FLAGS.passes < 1:
      raise ClientError(f"--passes={FLAGS.passes} must be >= 1")
    if FLAGS.passes != 1 and FLAGS.signature != "any_scan":
      raise ClientError(f"--passes applies to --signature=any_scan, not "
                        f"{FLAGS.signature}")
    origin = None
    if FLAGS.signature == "any_scan":
      if len(argv) != 2:
        raise ClientError(f"--signature=any_scan sends one scan per request; "
                          f"got {len(argv) - 1} files")
      request, origin, span, object_shape = any_scan_request(argv[1],
                                                             FLAGS.passes)
      shape = (1, *span)
    else:
      amplitudes, object_shape = read_scans(argv[1:])
      request = request_for(amplitudes, FLAGS.signature)
      shape = (len(amplitudes), *object_shape)
    if not FLAGS.url:
      json.dump(request, sys.stdout)
      sys.stdout.write("\n")
      return
    needed = 2 * int(np.prod(shape)) * BYTES_PER_NUMBER + (1 << 16)
    max_bytes = int(min(FLAGS.max_response_mb * 1e6, needed))
    response = post(FLAGS.url, request, FLAGS.timeout, max_bytes)
    outputs_of(response, shape)
    if FLAGS.out:
      saved = save_response(response, FLAGS.out, shape, origin, object_shape)
      print(f"wrote {FLAGS.out}: amplitude and phase {list(saved)}")
    else:
      json.dump(response, sys.stdout)
      sys.stdout.write("\n")
  except ClientError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except MemoryError:
    print("error: out of memory reading the scans or the response",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
