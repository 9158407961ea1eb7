"""What every command script in tools/ does: run a `ptychonet_tf.cli` command.

The scripts are thin so that the commands live in the package; this file
stays outside it, so that a missing install is still told in one line.
"""
import importlib
import sys


def launch(name):
  """Runs `ptychonet_tf.cli.<name>.run()`, or exits with one line when the
  package cannot be imported."""
  try:
    module = importlib.import_module(f"ptychonet_tf.cli.{name}")
  except ImportError as e:
    sys.exit(f"error: ptychonet_tf cannot be imported ({e}); install it with "
             f"'pip install -e .' from the repository root")
  module.run()
