"""Runs `python ARGS` commands as forks of one process that has imported TensorFlow.

Importing TensorFlow takes about 5 s of the 6 s that a refused command line
costs in a fresh interpreter, and the slow tier runs about a hundred of them.
`Zygote` imports the heavy libraries once (never running a TensorFlow op, so no
runtime or thread pool exists yet) and forks one child per command. The
child is what `python ARGS` would be from there on: its own process and
session, argv, sys.path[0], environment, working folder, resource limits,
stdin from /dev/null and stdout/stderr to files; the script or module runs as
`__main__`; the exit status is `sys.exit`'s (a traceback and 1 for an
uncaught exception), after atexit handlers and non-daemon threads, as at
interpreter exit.

What a fork cannot reproduce is an environment variable read while
TensorFlow is imported (e.g. TF_CPP_MIN_LOG_LEVEL): callers run such commands
in a fresh interpreter. `make test-release` sets PTYCHONET_TEST_FRESH=1 to run
every command in a fresh interpreter.

The server side is this file run as a script: it reads one JSON request per
line on stdin and answers one JSON line on stdout.
"""
import json
import os
import subprocess
import sys
import tempfile

PRELOAD = ("numpy", "tensorflow", "keras", "absl.app", "absl.flags", "h5py",
           "PIL.Image", "scipy.ndimage")


class Zygote:
  """Client: one server process per test worker, started on first use."""

  def __init__(self, repo, env):
    self._repo = repo
    self._env = env
    self._proc = None

  def _start(self):
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)], cwd=self._repo,
        env=self._env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, bufsize=1)
    ready = self._proc.stdout.readline()
    if ready.strip() != "ready":
      raise RuntimeError(f"zygote did not start: {ready!r}")

  def run(self, args, cwd, env, timeout, limits=None, tmp_dir=None):
    """`python ARGS` as a fork; a subprocess.CompletedProcess (text)."""
    if self._proc is None or self._proc.poll() is not None:
      self._start()
    with tempfile.TemporaryDirectory(dir=tmp_dir) as folder:
      out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
      request = dict(args=list(args), cwd=cwd, env=env, timeout=timeout,
                     limits=limits or {}, stdout=out, stderr=err)
      self._proc.stdin.write(json.dumps(request) + "\n")
      self._proc.stdin.flush()
      reply = self._proc.stdout.readline()
      if not reply:
        raise RuntimeError("zygote died")
      reply = json.loads(reply)
      with open(out, errors="replace") as f:
        stdout = f.read()
      with open(err, errors="replace") as f:
        stderr = f.read()
    if reply.get("timed_out"):
      raise subprocess.TimeoutExpired([sys.executable, *args], timeout,
                                      stdout, stderr)
    return subprocess.CompletedProcess([sys.executable, *args],
                                       reply["returncode"], stdout, stderr)

  def close(self):
    if self._proc is not None and self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._proc.kill()


# --- Server side ----------------------------------------------------------

LIMITS = {"as": "RLIMIT_AS", "fsize": "RLIMIT_FSIZE"}


def _exit_code(code):
  """The status the interpreter gives `sys.exit(code)`."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code & 0xFF
  print(code, file=sys.stderr)
  return 1


def _child(request):
  """Becomes `python ARGS`; never returns."""
  # pylint: disable=g-import-not-at-top
  import atexit
  import resource
  import runpy
  import threading
  import traceback
  code = 1
  try:
    os.setsid()
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
      os.dup2(fd, target)
      os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for key, value in request["limits"].items():
      limit = getattr(resource, LIMITS[key])
      resource.setrlimit(limit, (value, value))
    args = request["args"]
    if args[0] == "-m":
      sys.argv = [args[1], *args[2:]]
      sys.path[0] = os.getcwd()
      runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
      script = os.path.abspath(args[0])
      sys.argv = [args[0], *args[1:]]
      sys.path[0] = os.path.dirname(script)
      runpy.run_path(script, run_name="__main__")
    code = 0
  except SystemExit as e:
    code = _exit_code(e.code)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  try:
    threading._shutdown()  # pylint: disable=protected-access
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  os._exit(code)


def _wait(pid, timeout):
  """(returncode as subprocess gives it, timed out?) of child `pid`."""
  import time  # pylint: disable=g-import-not-at-top
  deadline = time.monotonic() + timeout
  delay = 0.005
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(status), False
    if time.monotonic() > deadline:
      import signal  # pylint: disable=g-import-not-at-top
      os.killpg(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return -signal.SIGKILL, True
    time.sleep(delay)
    delay = min(delay * 2, 0.05)


def _serve():
  import importlib  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    importlib.import_module(name)
  protocol = sys.stdout
  print("ready", file=protocol, flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      _child(request)
    returncode, timed_out = _wait(pid, request["timeout"])
    print(json.dumps(dict(returncode=returncode, timed_out=timed_out)),
          file=protocol, flush=True)


if __name__ == "__main__":
  _serve()
