"""Errors a user can cause, and the one-line reporting of them in entry points.

`report_user_errors` makes the `error: ...` line the last line of stderr:
TensorFlow logs from C++ threads and at interpreter shutdown (iterator and
rendezvous warnings), so after the line is printed the process's stderr is
pointed at /dev/null and nothing can follow it.
"""
import errno
import functools
import os
import sys


class UserError(Exception):
  """A problem with the user's input (a path, a shape, a flag, a file).

  Entry points print ``error: <message>`` on one line and exit with status 2
  instead of showing a traceback. The message names the offending thing and
  what was expected.
  """


def report_user_errors(main):
  """Wraps an absl ``main(argv)`` so that user errors end in one clear line."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      exit_with_error(str(e))
    except KeyboardInterrupt:
      print("interrupted; finished outputs are kept, re-run to resume",
            file=sys.stderr)
      sys.exit(130)
    except MemoryError:
      exit_with_error("out of memory; the input or a flag asks for more memory "
                      "than this machine (or its ulimit -v) has")
    except Exception as e:  # pylint: disable=broad-except
      message = disk_error_message(e)
      if message is None:
        raise
      exit_with_error(message)

  return wrapped


def exit_with_error(message, status=2):
  """Prints `error: <message>` as the last line of stderr and exits."""
  message = " ".join(str(message).split())
  sys.stdout.flush()
  print(f"error: {message}", file=sys.stderr, flush=True)
  silence_stderr()
  sys.exit(status)


def silence_stderr():
  """Points file descriptor 2 (and sys.stderr) at /dev/null, so that logs
  printed later (TensorFlow's C++ threads, interpreter shutdown) do not
  follow the error line."""
  try:
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
  except OSError:
    pass


_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG)
_DISK_PHRASES = ("No space left", "Read-only file system", "Disk quota",
                 "File too large")


def disk_error_message(error):
  """One line for a write that failed on a full, read-only or limited disk
  (OSError or a TensorFlow error saying so), or None for other errors."""
  if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
    name = error.filename or "a file"
    return f"cannot write {name}: {os.strerror(error.errno)}"
  text = str(getattr(error, "message", "") or error)
  tf = sys.modules.get("tensorflow")
  op_error = getattr(getattr(tf, "errors", None), "OpError", None)
  if op_error is not None and isinstance(error, op_error):
    for phrase in _DISK_PHRASES:
      if phrase.lower() in text.lower():
        first = " ".join(text.split())[:300]
        return f"cannot write: {first}"
  return None


def require(condition, message):
  """Raises UserError(message) unless condition holds."""
  if not condition:
    raise UserError(message)
