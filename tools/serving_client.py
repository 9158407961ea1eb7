r"""A small TF Serving REST client for exported PtychoNet models.

Prints the JSON request for one or more scan files (docs/scan_format.md):

  python tools/serving_client.py scan.npz > request.json

or posts it and saves the reconstruction:

  python tools/serving_client.py scan.npz \
      --url=http://localhost:8501/v1/models/ptychonet:predict --out=recon.npz

The request is TF Serving's columnar form, {"signature_name":
"serving_default", "inputs": {"amplitudes": [batch, N, h, w]}}; the response's
"outputs" hold "amplitude" and "phase" [batch, H, W], saved by --out as float32
arrays (plus "object" = amplitude * exp(i phase), complex64). Needs only
numpy and absl (no TensorFlow, no project import).
"""
import json
import os
import sys
import urllib.error
import urllib.request

from absl import app
from absl import flags
import numpy as np

flags.DEFINE_string("url", None,
                    "TF Serving predict URL, e.g. http://localhost:8501/v1/"
                    "models/ptychonet:predict; without it the request is printed.")
flags.DEFINE_string("out", None, "With --url: write the reconstruction to this .npz.")
flags.DEFINE_string("signature", "serving_default", "Signature name.")
flags.DEFINE_float("timeout", 120.0, "HTTP timeout (s).")
FLAGS = flags.FLAGS


class ClientError(Exception):
  pass


def load_amplitudes(path):
  """float32 [N, h, w] amplitudes of a scan .npz file."""
  if not os.path.isfile(path):
    raise ClientError(f"scan file {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as f:
      if "amplitudes" not in f:
        raise ClientError(f"scan file {path} has no 'amplitudes' array "
                          f"(see docs/scan_format.md)")
      amplitudes = np.asarray(f["amplitudes"], np.float32)
  except (OSError, ValueError, EOFError) as e:
    raise ClientError(f"scan file {path} is not a readable .npz file ({e})")
  if amplitudes.ndim != 3:
    raise ClientError(f"scan file {path}: amplitudes have shape "
                      f"{amplitudes.shape}; expected [N, h, w]")
  return amplitudes


def build_request(paths, signature="serving_default"):
  """The REST request dict for the scans in `paths` (equal shapes)."""
  scans = [load_amplitudes(p) for p in paths]
  for path, scan in zip(paths[1:], scans[1:]):
    if scan.shape != scans[0].shape:
      raise ClientError(f"scan file {path} has amplitudes {scan.shape}; "
                        f"{paths[0]} has {scans[0].shape}; a request holds "
                        f"scans of one geometry")
  return {"signature_name": signature,
          "inputs": {"amplitudes": np.stack(scans).tolist()}}


def post(url, request, timeout):
  data = json.dumps(request).encode()
  req = urllib.request.Request(url, data=data,
                               headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=timeout) as response:
      return json.loads(response.read())
  except urllib.error.HTTPError as e:
    detail = e.read().decode(errors="replace").strip().replace("\n", " ")
    raise ClientError(f"{url} answered HTTP {e.code}: {detail[:300]}")
  except (urllib.error.URLError, OSError) as e:
    raise ClientError(f"cannot reach {url} ({e})")
  except ValueError as e:
    raise ClientError(f"{url} did not answer JSON ({e})")


def save_response(response, path):
  outputs = response.get("outputs")
  if not isinstance(outputs, dict) or not {"amplitude", "phase"} <= set(outputs):
    raise ClientError(f"the response holds no outputs amplitude and phase: "
                      f"{str(response)[:200]}")
  amplitude = np.asarray(outputs["amplitude"], np.float32)
  phase = np.asarray(outputs["phase"], np.float32)
  tmp = path + ".tmp.npz"
  np.savez(tmp, amplitude=amplitude, phase=phase,
           object=(amplitude * np.exp(1j * phase)).astype(np.complex64))
  os.replace(tmp, path)
  return amplitude.shape


def main(argv):
  try:
    if len(argv) < 2:
      raise ClientError("give one or more scan .npz files")
    if FLAGS.out and not FLAGS.url:
      raise ClientError("--out needs --url (without it the request is printed)")
    request = build_request(argv[1:], FLAGS.signature)
    if not FLAGS.url:
      json.dump(request, sys.stdout)
      sys.stdout.write("\n")
      return
    response = post(FLAGS.url, request, FLAGS.timeout)
    if FLAGS.out:
      shape = save_response(response, FLAGS.out)
      print(f"wrote {FLAGS.out}: amplitude and phase {list(shape)}")
    else:
      json.dump(response, sys.stdout)
      sys.stdout.write("\n")
  except ClientError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
