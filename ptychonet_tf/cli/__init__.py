"""Command-line entry points: the only modules that define or read absl flags.

Each `main` turns its flags into the typed config objects of the library and
calls library functions; `python -m ptychonet_tf.<name>` (and the tools/
scripts) run them.
"""
import sys

from absl import app
from absl import flags

_EXPERIMENT_FLAGS = "ptychonet_tf.cli.experiment_flags"
GROUPS = ("simulation", "training", "run_dir")


def run_command(main, module_name, groups=()):
  """Runs an entry point's absl `main`, whichever script or shim started it.

  `--help` then shows the command's own docstring and its flags (those
  defined in its module and the groups of experiment flags it uses), not
  those of the two-line shim (`python -m ptychonet_tf.<name>`,
  `tools/<name>.py`) that imported it; `--helpfull` lists every flag.

  Args:
    main: the entry point's main(argv).
    module_name: the entry point module's __name__.
    groups: the groups of experiment flags (cli.experiment_flags) the
      command uses, from GROUPS.
  """
  module = sys.modules[module_name]
  main_module = sys.modules["__main__"]
  values = flags.FLAGS
  names = [f"{_EXPERIMENT_FLAGS}:{group}" for group in groups]
  if main_module is not module:
    main_module.__doc__ = module.__doc__
    names.append(module_name)
  for name in names:
    for flag in values.get_key_flags_for_module(name):
      values.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
