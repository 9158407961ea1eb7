"""Learned reconstructors: a PtychoNet SavedModel, alone or as DM's start.

`Learned` wraps a SavedModel (`model.inference.PtychoNetModel`) as a
`baselines.base.Reconstructor`, so the registry (`ptychonet_tf.reconstructors`)
serves it like an iterative method; `LearnedThenDM` runs DM from its output
(the paper's section 6).
"""
import dataclasses
import time
import types
from typing import Any, Optional

import numpy as np

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import base
from ptychonet_tf.baselines import dm
from ptychonet_tf.model import inference
from ptychonet_tf.utils.errors import UserError


@dataclasses.dataclass(frozen=True)
class LearnedConfig:
  """Settings of a learned reconstruction.

  Attributes:
    saved_model: a PtychoNet SavedModel (an export dir or a version dir);
      not needed when `model` is given.
    allow_other_probe: use a model trained with another probe than the
      scan's (a warning instead of a refusal).
    refine_probe: the model's refinement steps also refine the probe (its
      `any_scan_refine_probe` signature); the result holds the refined probe.
    passes: passes of the model's refinement steps, each from the last
      one's object (and probe): more converge further, in proportionally
      more time; None: 1, or `network.PROBE_PASSES` with refine_probe.
    model: an already loaded `model.inference.PtychoNetModel` (e.g. shared by
      many batches of scans); None loads `saved_model`.
  """
  saved_model: Optional[str] = None
  allow_other_probe: bool = False
  refine_probe: bool = False
  passes: Optional[int] = None
  model: Any = None

  def __post_init__(self):
    if self.model is None:
      if not self.saved_model:
        raise UserError("--saved_model is required by the learned methods "
                        "(an export dir or one of its version dirs)")
      inference.resolve_saved_model(self.saved_model)  # one line if missing


class Learned(base.Reconstructor):
  """A PtychoNet SavedModel as a reconstructor: one call per scan.

  `run` makes one warm-up call (loading and tracing are not
  reconstruction), then reconstructs each scan of the batch with one call;
  `network_seconds` and `seconds_per_iteration` are the median seconds of
  one scan's call, and the result has no iterations (chi empty).
  """

  name = "ptychonet"
  config_class = LearnedConfig

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    super().__init__(amplitudes, probe, layout, object_shape, config)
    self.model = self.config.model
    if self.model is None:
      scan = types.SimpleNamespace(
          amplitudes=np.zeros((self.count, *self.probe_shape), np.float32),
          layout=self.layout, object_shape=self.object_shape,
          probe=self.probe[0])
      self.model = inference.PtychoNetModel(
          self.config.saved_model, scan,
          allow_other_probe=self.config.allow_other_probe,
          refine_probe=self.config.refine_probe, passes=self.config.passes)

  def amplitude_terms(self, loop_amplitudes):
    """None: the SavedModel reads the detector amplitudes (`_scans`)."""
    del loop_amplitudes
    return {}

  def set_amplitudes(self, amplitudes):
    super().set_amplitudes(amplitudes)
    self._scans = np.asarray(amplitudes, np.float32).reshape(
        self.batch, self.count, *self.probe_shape)

  def run(self, initial_object=None, iterations=None, monitor=None):
    """One call per scan (`initial_object` and `iterations` are not used)."""
    del initial_object, iterations
    start = time.perf_counter()
    self.model(self._scans[0])  # warm-up: the first call traces the graph
    # A model that refines the probe holds each scan's after its call.
    refine = getattr(self.model, "refine_probe", False)
    objects, probes, seconds = [], [], []
    for scan in self._scans:
      tick = time.perf_counter()
      objects.append(self.model(scan))
      seconds.append(time.perf_counter() - tick)
      if refine:
        probes.append(self.model.probe)
    objects = np.stack(objects).astype(np.complex64)
    probe = np.stack(probes).astype(np.complex64) if refine else self.probe
    if monitor is not None:
      monitor(0, objects)
    per_scan = float(np.median(seconds))
    empty = np.zeros((0, self.batch), np.float32)
    return self.result(objects, probe, empty, empty,
                       time.perf_counter() - start, per_scan, per_scan)


@dataclasses.dataclass(frozen=True)
class LearnedThenDMConfig:
  """Settings of DM started from a learned model's output.

  Attributes:
    learned: the LearnedConfig of the start.
    solver: the DMConfig of the DM iterations.
  """
  learned: LearnedConfig = None
  solver: dm.DMConfig = dm.DMConfig()

  def __post_init__(self):
    if self.learned is None:
      raise UserError("--saved_model is required by the learned methods "
                      "(an export dir or one of its version dirs)")

  @classmethod
  def from_settings(cls, settings):
    return cls(learned=reconstructors.configure("ptychonet", **settings),
               solver=reconstructors.configure("dm", **settings))


class LearnedThenDM(base.Reconstructor):
  """DM from a learned model's output (the paper's section 6)."""

  name = "ptychonet+dm"
  config_class = LearnedThenDMConfig

  def __init__(self, amplitudes, probe, layout, object_shape, config=None):
    super().__init__(amplitudes, probe, layout, object_shape, config)
    inputs = (amplitudes, probe, layout, object_shape)
    self.learned = Learned(*inputs, self.config.learned)
    self.dm = dm.DifferenceMap(*inputs, self.config.solver)

  def set_amplitudes(self, amplitudes):
    super().set_amplitudes(amplitudes)
    if hasattr(self, "dm"):
      self.learned.set_amplitudes(amplitudes)
      self.dm.set_amplitudes(amplitudes)

  def run(self, initial_object=None, iterations=None, monitor=None):
    """The learned start, then DM (`iterations` overrides the DM config's)."""
    del initial_object
    start = self.learned.run()
    result = self.dm.run(start.object, iterations, monitor)
    result.seconds += start.seconds
    result.network_seconds = start.network_seconds
    result.method = self.name
    return result
