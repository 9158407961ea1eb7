"""`python tools/start_ceiling.py`: the command lives in `ptychonet_tf/cli/start_ceiling.py`.

Needs the package installed (`make install` or `pip install -e .`).
"""
import sys

try:
  from ptychonet_tf.cli.start_ceiling import run
except ImportError as e:
  sys.exit(f"error: ptychonet_tf cannot be imported ({e}); install it with "
           f"'pip install -e .' from the repository root")

if __name__ == "__main__":
  run()
