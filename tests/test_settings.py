"""Settings declared once (`ptychonet_tf.settings`): the flags, configs and
checks derived from a field."""
import dataclasses
from typing import Optional, Tuple

from absl import flags
from absl.testing import flagsaver
import pytest

from ptychonet_tf import settings
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.cli import train  # noqa: F401  (defines the train flags)
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.training.config import TrainConfig
from ptychonet_tf.utils.errors import UserError

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Toy:
  path: str = "plain field, no setting"
  toy_pair: Tuple[float, float] = settings.setting((0.1, 0.01), "A pair.")
  toy_count: int = settings.setting(3, "A count.")
  toy_mode: str = settings.setting("a", "A mode.", choices=("a", "b"))
  toy_source: Optional[str] = settings.setting(None, "A path.", flag="toy")
  toy_hidden: bool = settings.setting(False, "No flag.", flag=False)


def test_settings_of_reads_each_field_once():
  items = {item.name: item for item in settings.settings_of(Toy)}
  assert list(items) == ["toy_pair", "toy_count", "toy_mode", "toy_source",
                         "toy_hidden"]
  assert items["toy_pair"].type is tuple and not items["toy_pair"].optional
  assert items["toy_source"].type is str and items["toy_source"].optional
  assert items["toy_mode"].choices == ("a", "b")
  assert settings.coerce(items["toy_pair"], [1, "2"]) == (1.0, 2.0)
  assert settings.coerce(items["toy_count"], 4.0) == 4
  assert settings.coerce(items["toy_source"], None) is None
  with pytest.raises(UserError, match=r"toy_mode 'c' is not one of "
                     r"\('a', 'b'\)"):
    settings.check_choices(Toy(toy_mode="c"))


def test_flags_and_configs_derive_from_the_fields():
  experiment_flags.define_setting_flags(Toy)
  experiment_flags.define_setting_flags(Toy, command="toy")
  assert "toy_hidden" not in FLAGS and "path" not in FLAGS
  assert FLAGS["toy_count"].help == "A count."
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()
  with flagsaver.as_parsed(toy_pair="0.5,0.25", toy_mode="b",
                           toy_source="x"):
    config = experiment_flags.config_from_flags(Toy, path="given")
  assert config == Toy(path="given", toy_pair=(0.5, 0.25), toy_mode="b",
                       toy_source="x")
  with flagsaver.as_parsed(toy_pair="0.5,lots"):
    with pytest.raises(UserError, match="--toy_pair=0.5,lots is not a list "
                       "of numbers"):
      experiment_flags.config_from_flags(Toy)
  with pytest.raises(flags.IllegalFlagValueError):
    FLAGS["toy_mode"].parse("c")  # choices make an enum flag


@pytest.mark.parametrize("config_class", [NetworkConfig, TrainConfig])
def test_every_flag_of_a_config_is_its_field(config_class):
  """The flags of train are the settings' fields: same default, help and
  choices (--seed is the simulation's, with the same default)."""
  for item in settings.settings_of(config_class):
    if not item.flag:
      assert item.name not in FLAGS or item.name in ("mixed_precision",)
      continue
    flag = FLAGS[item.name]
    default = (list(map(str, item.default)) if item.type is tuple
               else item.default)
    assert flag.default == default, item.name
    if item.name != "seed":
      assert flag.help.endswith(item.help), item.name  # enums: <a|b>: ...
    if item.choices:
      assert tuple(flag.parser.enum_values) == item.choices, item.name
