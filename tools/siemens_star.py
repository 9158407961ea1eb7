"""`python tools/siemens_star.py`: the command lives in `ptychonet_tf/cli/siemens_star.py`.

Needs the package installed (`make install` or `pip install -e .`).
"""
from _launch import launch

if __name__ == "__main__":
  launch("siemens_star")
