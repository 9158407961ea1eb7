"""Every reconstruction method by name: the one registry of the package.

`python -m ptychonet_tf.reconstruct`, the evaluation (`evaluation/`), the
demo and the benchmarks pick methods here. A method is a subclass of
`baselines.base.Reconstructor` with a `name` and a `config_class` (a frozen
dataclass of its settings); adding one is that class and one line in
`METHODS`, which names the class's module and attribute so that the names
are known without importing TensorFlow (command lines list them before it
starts).

  config = reconstructors.configure("lsqml", iterations=100,
                                    noise_model="poisson")
  result = reconstructors.reconstruct("lsqml", amplitudes, probe, layout,
                                      object_shape, config)

Methods:
  dm            difference map (`baselines.dm`)
  epie          ePIE (`baselines.epie`)
  lsqml         least-squares maximum likelihood (`baselines.lsqml`)
  pnp           plug-and-play: rounds of LSQML (or DM) iterations, each ending
                in a step of the learned image prior (`baselines.pnp`)
  ptychonet     one pass of a PtychoNet SavedModel (`learned.Learned`)
  ptychonet+dm  DM started from the SavedModel's output, the paper's
                section 6 (`learned.LearnedThenDM`)
"""
import dataclasses
import importlib

from ptychonet_tf.utils.errors import UserError

# The registry: name -> "module:class" of its reconstructor.
METHODS = {
    "dm": "ptychonet_tf.baselines.dm:DifferenceMap",
    "epie": "ptychonet_tf.baselines.epie:EPIE",
    "lsqml": "ptychonet_tf.baselines.lsqml:LSQML",
    "pnp": "ptychonet_tf.baselines.pnp:PnP",
    "ptychonet": "ptychonet_tf.reconstructors.learned:Learned",
    "ptychonet+dm": "ptychonet_tf.reconstructors.learned:LearnedThenDM",
}
NAMES = tuple(METHODS)
# Methods that need a SavedModel.
LEARNED = ("ptychonet", "ptychonet+dm")


def get(name):
  """The reconstructor class of a method name (UserError if unknown).

  A method whose settings choose among classes (pnp's data steps) names
  its first; `build` and `for_config` give the one a config asks for
  (`Reconstructor.variant`).
  """
  if name not in METHODS:
    raise UserError(f"method {name!r} is not one of {NAMES}")
  module, _, attribute = METHODS[name].partition(":")
  cls = getattr(importlib.import_module(module), attribute)
  if cls.name != name:
    raise ValueError(f"registry entry {name!r} names {cls.__name__}, whose "
                     f"name is {cls.name!r}")
  return cls


def for_config(config):
  """The reconstructor class whose config_class `config` is."""
  for name in NAMES:
    cls = get(name)
    if type(config) is cls.config_class:  # pylint: disable=unidiomatic-typecheck
      return cls.variant(config)
  raise ValueError(f"no reconstruction method takes a {type(config).__name__}")


def configure(name, **settings):
  """The config of method `name` from named settings.

  Each setting whose name is a field of the method's config class is used
  (the others are left out, so one set of command-line settings configures
  any method); a config class with a `from_settings` classmethod builds
  itself. UserError on a bad value.
  """
  config_class = get(name).config_class
  if hasattr(config_class, "from_settings"):
    return config_class.from_settings(settings)
  fields = {f.name for f in dataclasses.fields(config_class)}
  return config_class(**{k: v for k, v in settings.items() if k in fields})


def build(name, amplitudes, probe, layout, object_shape, config=None):
  """A reconstructor of method `name` for the scans (see base.Reconstructor)."""
  return get(name).variant(config)(amplitudes, probe, layout, object_shape,
                                   config)


def reconstruct(name, amplitudes, probe, layout, object_shape, config=None,
                initial_object=None):
  """Reconstructs scans with method `name`; returns a base.Reconstruction.

  Args:
    name: one of NAMES.
    amplitudes: float32 [N, h, w] or [B, N, h, w], detector convention.
    probe: complex64 [h, w] (or [B, h, w]).
    layout: int32 [N, 4].
    object_shape: (H, W).
    config: the method's config (None: its defaults).
    initial_object: optional complex [H, W] or [B, H, W] start of an
      iterative method (e.g. a learned estimate); None: config.init.
  """
  return build(name, amplitudes, probe, layout, object_shape, config).run(
      initial_object)
