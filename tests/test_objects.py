import math

import numpy as np
import pytest

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.physics import objects
from ptychonet_tf.physics import simulator


def test_object_ranges_default():
  rng = np.random.default_rng(0)
  a, p = rng.random((20, 30)) * 7 + 3, rng.random((20, 30))
  obj = objects.make_object(a, p)
  amp, phase = objects.split_object(obj)
  assert obj.dtype == np.complex64 and obj.shape == (20, 30)
  assert amp.min() == pytest.approx(0.5, abs=1e-6) and amp.max() == pytest.approx(1.0, abs=1e-6)
  assert phase.min() == pytest.approx(-math.pi / 3, abs=1e-6)
  assert phase.max() == pytest.approx(0.0, abs=1e-6)


def test_object_custom_ranges_and_phase_only():
  rng = np.random.default_rng(1)
  cfg = objects.ObjectConfig(amp_min=0.2, amp_max=0.4, phase_min=-1, phase_max=1)
  amp, phase = objects.split_object(objects.make_object(rng.random((8, 8)), rng.random((8, 8)), cfg))
  assert 0.2 - 1e-6 <= amp.min() and amp.max() <= 0.4 + 1e-6
  assert phase.min() == pytest.approx(-1, abs=1e-6) and phase.max() == pytest.approx(1, abs=1e-6)
  po = objects.ObjectConfig(mode="phase_only", constant_amplitude=0.5)
  amp, _ = objects.split_object(objects.make_object(None, rng.random((8, 8)), po))
  np.testing.assert_allclose(amp, 0.5, rtol=1e-6)


def test_object_config_validation():
  with pytest.raises(UserError):
    objects.ObjectConfig(amp_min=1.0, amp_max=0.5)
  with pytest.raises(UserError):
    objects.ObjectConfig(mode="amplitude_only")
  with pytest.raises(UserError, match="same shape"):
    objects.make_object(np.zeros((4, 4)), np.zeros((5, 5)))


def test_random_view_shapes_and_determinism():
  image = np.random.default_rng(2).random((60, 90))
  for shape in [(30, 40), (40, 30), (64, 64)]:
    assert objects.random_view(image, shape).shape == shape
    v1 = objects.random_view(image, shape, np.random.default_rng(5))
    v2 = objects.random_view(image, shape, np.random.default_rng(5))
    assert v1.shape == shape
    np.testing.assert_array_equal(v1, v2)
  views = [objects.random_view(image, (20, 20), np.random.default_rng(s)) for s in range(4)]
  assert len({v.tobytes() for v in views}) == 4


def test_random_objects_differ_and_respect_ranges():
  train, _ = images_lib.open_image_pools("default")
  cfg = objects.ObjectConfig()
  objs = [simulator.random_object(train, (40, 50), cfg, simulator.scan_rng(0, "train", i), images_lib.load_image)
          for i in range(3)]
  assert len({o.tobytes() for o in objs}) == 3
  again = simulator.random_object(train, (40, 50), cfg, simulator.scan_rng(0, "train", 1), images_lib.load_image)
  np.testing.assert_array_equal(again, objs[1])
  amp, phase = objects.split_object(np.stack(objs))
  assert amp.min() >= 0.5 - 1e-6 and amp.max() <= 1 + 1e-6
  assert phase.min() >= -math.pi / 3 - 1e-6 and phase.max() <= 1e-6
