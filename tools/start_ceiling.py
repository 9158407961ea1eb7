"""`python tools/start_ceiling.py`: the command lives in `ptychonet_tf/cli/start_ceiling.py`.

Needs the package installed (`make install` or `pip install -e .`).
"""
from _launch import launch

if __name__ == "__main__":
  launch("start_ceiling")
