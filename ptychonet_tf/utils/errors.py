"""Errors a user can cause, and the one-line reporting of them in entry points."""
import functools
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
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print("interrupted; finished outputs are kept, re-run to resume",
            file=sys.stderr)
      sys.exit(130)

  return wrapped


def require(condition, message):
  """Raises UserError(message) unless condition holds."""
  if not condition:
    raise UserError(message)
