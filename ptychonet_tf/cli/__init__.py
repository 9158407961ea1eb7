"""Command-line entry points: the only modules that define or read absl flags.

Each `main` turns its flags into the typed config objects of the library and
calls library functions; `python -m ptychonet_tf.<name>` (and the tools/
scripts) run them.
"""
import sys

from absl import app
from absl import flags

from ptychonet_tf.utils.errors import UserError

def run_command(main, module_name, groups=()):
  """Runs an entry point's absl `main`, whichever script or shim started it.

  `--help` then shows the command's own docstring and its flags (those
  defined in its module and the groups of experiment flags it uses), not
  those of the two-line shim (`python -m ptychonet_tf.<name>`,
  `tools/<name>.py`) that imported it; `--helpfull` lists every flag.

  Args:
    main: the entry point's main(argv).
    module_name: the entry point module's __name__.
    groups: the groups of experiment flags the command uses
      (`experiment_flags.SIMULATION`, `TRAINING`, `RUN_DIR`).
  """
  module = sys.modules[module_name]
  main_module = sys.modules["__main__"]
  values = flags.FLAGS
  names = list(groups)
  if main_module is not module:
    main_module.__doc__ = module.__doc__
    names.append(module_name)
  for name in names:
    for flag in values.get_key_flags_for_module(name):
      values.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


HELP_FLAGS = ("-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv):
  """absl flag parsing with this package's exit statuses.

  A bad flag (unknown name, a value outside its choices, an unreadable
  flagfile) ends in one line `error: ...` and exit status 2, like every other
  bad input; `--help` and its variants print the usage and exit 0.

  Returns:
    The positional arguments (argv[0] first), as absl's parser does.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = " ".join(str(e).split()).removeprefix("ERROR:: ")
    print(f"error: {message}; see --help", file=sys.stderr)
    sys.exit(2)
  except SystemExit as e:
    # absl's help flags print the usage and exit 1 while parsing.
    asked = any(a.split("=")[0] in HELP_FLAGS for a in argv[1:])
    sys.exit(0 if asked and e.code in (0, 1) else e.code)


def require_flags(*names):
  """Raises one UserError naming every flag of `names` that has no value."""
  missing = [f"--{n}" for n in names if flags.FLAGS[n].value in (None, "")]
  if missing:
    verb = "is" if len(missing) == 1 else "are"
    listed = (missing[0] if len(missing) == 1 else
              ", ".join(missing[:-1]) + " and " + missing[-1])
    raise UserError(f"{listed} {verb} required (see --help)")
