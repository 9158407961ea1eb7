"""Settings declared once: dataclass fields that carry their help and choices.

A config dataclass (`model.network.NetworkConfig`,
`training.config.TrainConfig`) declares each setting as one field:

  depth: int = settings.setting(4, "Encoder (and decoder) layers.")
  input_norm: str = settings.setting("log", "Network input: ...",
                                     choices=INPUT_NORMS)

The field's name, type annotation, default, choices and help are all there
is to know about it; what derives from them:

- the absl flags of the entry points (`cli/experiment_flags.py`: the name is
  the flag's, the type picks DEFINE_integer/float/bool/string, choices make
  it an enum) and the config built from parsed flags;
- the keys of a saved config (the network's model.json) and the values of
  keys it lacks (the defaults);
- the run directory's compatibility check (`training/run_dir.py`: the
  network settings a resumed run must share);
- the choice check of `check_choices`.

Metadata of a field (`setting` arguments):
  flag: True, an experiment flag (every command that reads configs/*.flags
    accepts it); a command name such as "train", a flag of that command only;
    False, no flag (the value comes from elsewhere: a dataset, another flag).
  saved: whether the value is a key of the saved config (model.json).
  compared: whether a run directory refuses to resume with another value.
"""
import dataclasses
import json
import typing

from ptychonet_tf.utils.errors import UserError


def setting(default, help, *, choices=None, flag=True, saved=True,  # pylint: disable=redefined-builtin
            compared=True):
  """A dataclass field declaring one setting (see the module docstring)."""
  return dataclasses.field(default=default, metadata={
      "help": help, "choices": tuple(choices) if choices else None,
      "flag": flag, "saved": saved, "compared": compared})


@dataclasses.dataclass(frozen=True)
class Setting:
  """One declared setting of a config class.

  Attributes:
    name: the field's (and flag's, and saved key's) name.
    type: the value type: int, float, bool, str or tuple (of floats).
    optional: whether None is a value (an Optional[...] annotation).
    default, help, choices, flag, saved, compared: as declared by `setting`.
  """
  name: str
  type: type
  optional: bool
  default: typing.Any
  help: str
  choices: typing.Optional[tuple]
  flag: typing.Union[bool, str]
  saved: bool
  compared: bool


def _value_type(annotation):
  """(int/float/bool/str/tuple, optional) of a field's type annotation."""
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if origin is typing.Union and type(None) in args:
    inner, = (a for a in args if a is not type(None))
    return _value_type(inner)[0], True
  if origin is tuple:
    return tuple, False
  return annotation, False


def settings_of(config_class):
  """The declared settings of a config dataclass, in field order."""
  hints = typing.get_type_hints(config_class)
  out = []
  for field in dataclasses.fields(config_class):
    if "help" not in field.metadata:
      continue  # a plain field (paths, nested configs)
    kind, optional = _value_type(hints[field.name])
    out.append(Setting(name=field.name, type=kind, optional=optional,
                       default=field.default, **field.metadata))
  return tuple(out)


def coerce(item, value):
  """`value` (from JSON or a flag) as `item`'s type: tuples for lists, int or
  float for numbers; None stays None."""
  if value is None:
    return None
  if item.type is tuple:
    return tuple(float(v) for v in value)
  if item.type in (int, float):
    return item.type(value)
  return value


def to_json(value):
  """A setting's value as JSON has it (tuples as lists)."""
  return json.loads(json.dumps(value))


def values(config, which=lambda item: True):
  """{name: value} of the settings of a config instance that `which` keeps."""
  return {item.name: getattr(config, item.name)
          for item in settings_of(type(config)) if which(item)}


def check_choices(config):
  """Raises UserError naming the first setting whose value is not one of its
  choices; returns `config`."""
  for item in settings_of(type(config)):
    value = getattr(config, item.name)
    if item.choices and value not in item.choices:
      raise UserError(f"{item.name} {value!r} is not one of {item.choices}")
  return config
