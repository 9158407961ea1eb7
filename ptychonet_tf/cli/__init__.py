"""Command-line entry points: the only modules that define or read absl flags.

Each `main` turns its flags into the typed config objects of the library and
calls library functions; `python -m ptychonet_tf.<name>` (and the tools/
scripts) run them.
"""
