"""The paper's comparison on a dataset's test split: methods, scores, tables, figures.

`compare(data_dir, out_dir, models, settings)` is what
`python -m ptychonet_tf.evaluate` runs, callable from Python: it reads the
test split (`read_test_split`), reconstructs every test scan with each
learned model, DM from random and flat starts, LSQML, DM started from the
first model and DM at equal time (`run_comparison`, methods from the
registry through `evaluation.methods`), scores every reconstruction in both
conventions (`score`), writes the report (`write_outputs`) and, with doses,
the dose sweep (`dose_sweep`). Its settings come in a `ComparisonSettings`;
nothing here reads flags.

  settings = comparison.ComparisonSettings(dm_iterations=100, run_lsqml=True)
  results = comparison.compare("tfrecords/small_dense", "reports/x",
                               [("PtychoNet", "saved_models/small_dense")],
                               settings)
"""
import dataclasses
import math
import os
import types
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tqdm

from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.baselines import pnp
from ptychonet_tf.data import pipeline
from ptychonet_tf.evaluation import doses as doses_lib
from ptychonet_tf.evaluation import methods as methods_lib
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.evaluation import report
from ptychonet_tf.model import inference
from ptychonet_tf.physics import family as family_lib
from ptychonet_tf.physics import simulator
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

MEAN_OBJECT = "Mean object (reference)"
DM_RANDOM = "DM (random start)"
DM_FLAT = "DM (flat start)"
DM_EQUAL_TIME = "DM at equal time"
LSQML = "LSQML"
PNP = "PnP"


@dataclasses.dataclass(frozen=True)
class ComparisonSettings:
  """How a comparison is run and what its report says about it.

  Attributes:
    data_dir: the dataset directory (named in the report).
    dm_iterations: iterations of every DM row (and of the LSQML row).
    dm_batch: scans reconstructed together by DM and LSQML.
    dm_seed: seed of DM's random initial objects.
    curve_every: the object error is recorded every this many iterations.
    region_fraction: the metrics' region: pixels whose summed illumination
      sum_j |P|^2 reaches this fraction of its maximum.
    run_dm: run DM from a random start (and, with dm_flat_start, from a
      flat one).
    dm_flat_start: also run DM from a flat object.
    dm_equal_time: with a model and DM, add "DM at equal time": DM from a
      flat start for as many iterations as fit in the first model's
      seconds per scan.
    run_lsqml: run LSQML from a flat start for dm_iterations.
    lsqml_batch_size: LSQML's positions per update.
    run_pnp: run plug-and-play (`baselines.pnp`, its default settings and
      lsqml_batch_size) from a flat start for dm_iterations data iterations.
    prior: the exported prior of the PnP row; None: the shipped one.
    pnp_data_steps, pnp_sigma: the PnP row's data steps ("lsqml" or "dm",
      `pnp.PnPConfig.data_steps`) and its (first, last) noise levels (None:
      PnPConfig's).
    num_panels: test objects drawn in the image panels.
    doses: photons per pattern of a dose sweep (() for none; inf = noise
      free): every test scan redrawn with Poisson noise at each dose.
    seed: seed of the sweep's noise.
    command: the command line that produced the report (a list of words).
  """
  data_dir: str = ""
  dm_iterations: int = 300
  dm_batch: int = 4
  dm_seed: int = 0
  curve_every: int = 10
  region_fraction: float = metrics.REGION_FRACTION
  run_dm: bool = True
  dm_flat_start: bool = True
  dm_equal_time: bool = True
  run_lsqml: bool = False
  lsqml_batch_size: int = 10
  run_pnp: bool = False
  prior: Optional[str] = None
  pnp_data_steps: str = "lsqml"
  pnp_sigma: Optional[Tuple[float, float]] = None
  num_panels: int = 3
  doses: Tuple[float, ...] = ()
  seed: int = 0
  command: Sequence[str] = ()

  def __post_init__(self):
    if self.dm_iterations < 1 or self.curve_every < 1 or self.dm_batch < 1:
      raise UserError(f"dm_iterations={self.dm_iterations}, curve_every="
                      f"{self.curve_every} and dm_batch={self.dm_batch} must "
                      f"be >= 1")
    if not 0 < self.region_fraction <= 1:
      raise UserError(f"region_fraction={self.region_fraction} must be in "
                      f"(0, 1]")
    if self.num_panels < 0:
      raise UserError(f"num_panels={self.num_panels} must be >= 0")


class Scan(NamedTuple):
  """One scan of `read_scans` in its own geometry."""
  amplitudes: np.ndarray  # float32 [N, h, w]
  positions: np.ndarray  # float32 [N, 2]
  probe: np.ndarray  # complex64 [h, w]
  truth: np.ndarray  # complex64 [H, W]
  index: int  # its index in the split
  description: str  # a family's draw (kinds and sizes), else ""


def read_scans(data_dir, limit=0, split="test"):
  """The scans of a split, each with its geometry: a family dataset's own
  probe and positions (and the description of its draw,
  `physics.family.draw_scan`), or the dataset's (every scan the same).

  Returns:
    [Scan] for the first `limit` scans in reading order (0: all).
  """
  info = pipeline.load_dataset_info(data_dir)
  if not info.family:
    amplitudes, truths, _ = read_test_split(data_dir, limit, split)
    positions = info.geometry.layout[:, [0, 2]].astype(np.float32)
    return [Scan(a, positions, info.geometry.probe, t, i, "")
            for i, (a, t) in enumerate(zip(amplitudes, truths))]
  family = family_lib.FamilyConfig(**info.family)
  seed = (info.identity or {}).get("seed", 0)
  if info.counts.get(split, 0) == 0:
    raise UserError(f"dataset {data_dir} has no {split} scans")
  scans = []
  with pipeline.naming_damaged_records(data_dir, split):
    for batch in pipeline.make_dataset(data_dir, split, batch_size=1,
                                       shuffle=False, repeat=False):
      planes = batch["probe"][0].numpy()
      index = int(batch["index"][0])
      draw = family_lib.draw_scan(simulator.scan_rng(seed, split, index),
                                  info.geometry.probe_shape, family)
      scans.append(Scan(
          batch["amplitudes"][0].numpy(), batch["positions"][0].numpy(),
          (planes[..., 0] + 1j * planes[..., 1]).astype(np.complex64),
          (batch["object_amplitude"][0].numpy() * np.exp(
              1j * batch["object_phase"][0].numpy())).astype(np.complex64),
          index, draw.description))
      if limit and len(scans) >= limit:
        break
  return scans


def read_test_split(data_dir, limit=0, split="test"):
  """The test split (or another `split`) of a dataset as arrays.

  Args:
    data_dir: a dataset directory (tools/make_tfrecords.py).
    limit: the first `limit` scans; 0 = all.
    split: "test", or "train" (e.g. to tune on scans that are not scored).

  Returns:
    (amplitudes float32 [S, N, h, w], truth complex64 [S, H, W],
     data.pipeline.DatasetInfo).
  """
  info = pipeline.load_dataset_info(data_dir)
  if info.counts.get(split, 0) == 0:
    raise UserError(f"dataset {data_dir} has no {split} scans")
  if not info.objects:
    raise UserError(f"dataset {data_dir} holds measured scans without "
                    f"objects, so there is nothing to score against; "
                    f"reconstruct them with python -m "
                    f"ptychonet_tf.reconstruct")
  if info.family:
    raise UserError(f"dataset {data_dir} is a family of geometries (each "
                    f"scan its own probe and positions); the comparison "
                    f"takes datasets of one geometry: score a family with "
                    f"benchmarks/bench_any_scan.py --family_data={data_dir}")
  amplitudes, truths = [], []
  # A damaged record ends in one line naming its shard, not a DataLossError.
  with pipeline.naming_damaged_records(data_dir, split):
    for batch in pipeline.make_dataset(data_dir, split, batch_size=8,
                                       shuffle=False, repeat=False):
      amplitudes.append(batch["amplitudes"].numpy())
      truths.append(batch["object_amplitude"].numpy()
                    * np.exp(1j * batch["object_phase"].numpy()))
      if limit and sum(len(a) for a in amplitudes) >= limit:
        break
  amplitudes = np.concatenate(amplitudes).astype(np.float32)
  truths = np.concatenate(truths).astype(np.complex64)
  if limit:
    amplitudes, truths = amplitudes[:limit], truths[:limit]
  return amplitudes, truths, info


def read_scored_split(data_dir, limit=0, split="test", photons=0, seed=0):
  """A split as the benchmarks score methods on it.

  `read_test_split`'s scans, redrawn with Poisson noise at `photons` per
  pattern as `evaluate --photons` redraws them (`doses.noisy_scans`, the
  same draw for the same seed; 0 keeps them as they are), with the region
  the metrics are computed on.

  Returns:
    (amplitudes float32 [S, N, h, w], truths complex64 [S, H, W],
     physics.geometry.Geometry, the illuminated region bool [H, W]).
  """
  amplitudes, truths, info = read_test_split(data_dir, limit, split)
  geometry = info.geometry
  if photons > 0:
    amplitudes = doses_lib.noisy_scans(amplitudes, photons, seed)
  region = metrics.illuminated_region(geometry.layout, geometry.object_shape,
                                      geometry.probe)
  return amplitudes, truths, geometry, region


def load_predictor(path, geometry):
  """A model.inference.PtychoNetModel for scans of `geometry`.

  Its input and output shapes (and its layout and probe, when it records
  them) are checked against the geometry: float32 [N, h, w] -> complex64
  [H, W].
  """
  n, (h, w) = geometry.num_positions, geometry.probe_shape
  shape_of_scan = types.SimpleNamespace(
      amplitudes=np.zeros((n, h, w), np.float32), layout=geometry.layout,
      object_shape=tuple(geometry.object_shape), probe=geometry.probe)
  return inference.PtychoNetModel(path, shape_of_scan)


def score(objects, truths, mask):
  """Per-scan metrics in both conventions: {"scanned": [...], "paper": [...]}."""
  scanned, paper = [], []
  for estimate, truth in zip(objects, truths):
    scanned.append(metrics.complex_metrics(estimate, truth, mask))
    paper.append(metrics.paper_metrics(estimate, truth))
  return {"scanned": scanned, "paper": paper}


def mean_objects(truths, mask):
  """Each object replaced by a constant, its own mean amplitude and phase on
  `mask`: the best any featureless guess can score. complex64 [S, H, W]."""
  return np.stack([np.full(t.shape, np.abs(t)[mask].mean() *
                           np.exp(1j * np.angle(t)[mask].mean()), np.complex64)
                   for t in truths])


def speed_words(speedup):
  """The first model against DM from `speedup` (DM seconds / model seconds):
  "12x faster", "1.3x faster" or, below 1, "1.6x slower"."""
  if speedup >= 10:
    return f"{speedup:.0f}x faster"
  if speedup >= 1:
    return f"{speedup:.1f}x faster"
  return f"{1 / speedup:.1f}x slower"


def write_outputs(out_dir, title, info, truths, mask, methods, curves, note,
                  settings):
  """results.json, results.md, report.md and the figures.

  Args:
    out_dir: the report folder.
    title: the report's title.
    info: data.pipeline.DatasetInfo of the test split.
    truths: complex [S, H, W] ground truth.
    mask: bool [H, W] the metrics' region.
    methods: dict name -> {"objects", "seconds", "scores", optional "panel"}.
    curves: dict start name -> {"chi", "iterations", "mse", "seconds",
      "amplitude_psnr", "phase_psnr"} (see methods.run_solver; "seconds" per
      scan at each point).
    note: dict, optional "speedup" (DM seconds / network seconds) and
      "equal_time" (model, iterations, seconds_per_iteration of the "DM at
      equal time" row).
    settings: ComparisonSettings.

  Returns:
    The Markdown tables (str).
  """
  # Phase-only objects have a constant true amplitude, which the mean object
  # reproduces exactly (a PSNR of ~145 dB that says nothing): n/a.
  constant_amplitude = all(np.ptp(np.abs(t)[mask]) <= 1e-6 * np.abs(t).max()
                           for t in truths)
  rows, results = [], {}
  for name, m in methods.items():
    summary = {c: report.summarize(m["scores"][c]) for c in ("scanned", "paper")}
    if name == MEAN_OBJECT and constant_amplitude:
      for c in summary:
        summary[c]["amplitude_psnr"] = summary[c]["amplitude_ssim"] = None
    rows.append((name, summary, m["seconds"]))
    results[name] = {"seconds_per_scan": m["seconds"], "mean": summary,
                     "per_scan": m["scores"]}
  g = info.geometry
  panels = min(settings.num_panels, len(truths))
  aligned = {name: np.stack([metrics.remove_phase_offset(o, t, mask)
                             for o, t in zip(m["objects"][:panels],
                                             truths[:panels])])
             for name, m in methods.items() if m.get("panel", True)}
  amp_range = (float(np.abs(truths).min()), float(np.abs(truths).max()))
  phase_range = (float(np.angle(truths).min()), float(np.angle(truths).max()))
  if amp_range[1] - amp_range[0] < 1e-3:
    amp_range = (0.0, 1.0)
  report.save_panels(os.path.join(out_dir, "amplitude.png"), truths[:panels],
                     aligned, "amplitude", amp_range, f"{title}: amplitude",
                     mask=mask)
  report.save_panels(os.path.join(out_dir, "phase.png"), truths[:panels],
                     aligned, "phase", phase_range, f"{title}: phase (rad)",
                     mask=mask)
  figures = ["amplitude.png", "phase.png"]
  if curves:
    report.save_curves(os.path.join(out_dir, "curves.png"), curves,
                       f"{title}: convergence, mean over {len(truths)} "
                       f"test scans")
    figures.append("curves.png")
    points = {}
    for name, m in methods.items():
      if m.get("learned") and m["seconds"] > 0:
        scanned = results[name]["mean"]["scanned"]
        points[name] = (m["seconds"], scanned["amplitude_psnr"]["mean"],
                        scanned["phase_psnr"]["mean"])
    report.save_time_to_quality(
        os.path.join(out_dir, "time_to_quality.png"),
        {name: c for name, c in curves.items() if "seconds" in c}, points,
        f"{title}: quality against time, mean over {len(truths)} test scans")
    figures.append("time_to_quality.png")
  setup = (f"{len(truths)} test scans of dataset `{settings.data_dir}`: "
           f"{g.num_positions} patterns of {g.probe_shape[0]}x"
           f"{g.probe_shape[1]}, object {g.object_shape[0]}x"
           f"{g.object_shape[1]}; DM {settings.dm_iterations} iterations, "
           f"known probe.")
  tables = ("### Illuminated region, constant phase offset removed\n\n"
            + report.markdown_table(rows, "scanned")
            + "\n\n### Paper's raw convention (whole object, no offset "
            "removal)\n\n" + report.markdown_table(rows, "paper"))
  if constant_amplitude:
    tables += (f"\n\nn/a: the true amplitude is constant (phase-only "
               f"objects); \"{MEAN_OBJECT}\" reproduces it exactly, so its "
               f"amplitude scores say nothing.")
  files.write_text(os.path.join(out_dir, "results.md"), tables + "\n",
                   make_parent=True)
  speed = ""
  if note.get("equal_time"):
    e = note["equal_time"]
    speed += (f"\n\"{DM_EQUAL_TIME}\" runs DM from a flat start for "
              f"{e['iterations']} iterations, as many as fit in the "
              f"{e['model']} seconds per scan at DM's "
              f"{e['seconds_per_iteration'] * 1e3:.2f} ms per iteration and "
              f"scan (measured in this run).\n")
  if note.get("speedup"):
    speed += (f"\nPtychoNet is **{speed_words(note['speedup'])}** per scan "
              f"than {settings.dm_iterations} DM iterations (same machine, "
              f"same run).\n")
  body = [f"# {title}\n", setup + "\n", tables + "\n", speed,
          "Mean ± standard deviation over the test scans. Conventions: the "
          "\"scanned\" tables compare only the pixels the probe illuminates "
          f"(summed intensity at least {settings.region_fraction:g} of its "
          f"maximum: {mask.mean():.0%} of the object) and first remove the "
          "constant phase offset that ptychography cannot "
          "measure; the paper's tables compare |O| and angle(O) over the whole "
          "object as they are, so an unmeasurable global phase and the "
          "unilluminated border count as error there. That, and the noise-free "
          "data with the known probe, is why DM scores far above the paper's "
          f"14.39 dB here. \"{MEAN_OBJECT}\" replaces every object by a "
          "constant, its own mean amplitude and phase: a floor that a method "
          "must beat to have recovered any structure (SSIM rewards smooth "
          "flat guesses, so compare PSNR against it first).\n"]
  body.append("In the figures, pixels outside the illuminated region (where "
              "the metrics are computed) are gray for every method.\n")
  body += [f"![{f}]({f})\n" for f in figures]
  body.append("\nProduced by:\n\n```\npython -m ptychonet_tf.evaluate "
              + " ".join(settings.command) + "\n```\n")
  files.write_text(os.path.join(out_dir, "report.md"), "\n".join(body))
  files.write_json(os.path.join(out_dir, "results.json"), {
      "title": title, "data_dir": settings.data_dir, "num_scans": len(truths),
      "dm_iterations": settings.dm_iterations, "methods": results,
      "curves": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()}
                 for k, v in curves.items()},
      "speedup": note.get("speedup"), "equal_time": note.get("equal_time")})
  return tables


# --- Running the comparison ------------------------------------------------


def _result(objects, seconds, truths, mask, **extra):
  return dict(objects=objects, seconds=seconds,
              scores=score(objects, truths, mask), **extra)


class Comparison:
  """The methods of one comparison on one test split (see `compare`).

  Args:
    amplitudes: float32 [S, N, h, w] the test scans.
    truths: complex64 [S, H, W] their objects.
    geometry: physics.geometry.Geometry of the scans.
    models: [(name, SavedModel dir)]; the first one starts DM.
    settings: ComparisonSettings.
    denoiser: the PnP row's prior as a callable (x, sigma) -> x (None: the
      settings' exported prior, or the shipped one).
  """

  def __init__(self, amplitudes, truths, geometry, models, settings,
               denoiser=None):
    self.denoiser = denoiser
    self.amplitudes = amplitudes
    self.truths = truths
    self.geometry = geometry
    self.models = list(models)
    self.settings = settings
    self.mask = metrics.illuminated_region(geometry.layout,
                                           geometry.object_shape,
                                           geometry.probe,
                                           settings.region_fraction)

  def solver(self, config, name, amplitudes=None, initial=None):
    """An iterative method over the scans in batches, with a progress bar
    (`methods.run_solver`)."""
    amplitudes = self.amplitudes if amplitudes is None else amplitudes
    with tqdm.tqdm(total=len(amplitudes) * config.iterations, desc=name,
                   unit="it", unit_scale=True, leave=True) as bar:
      return methods_lib.run_solver(
          amplitudes, self.truths, self.geometry, config, initial, self.mask,
          batch=self.settings.dm_batch, progress=bar)

  def dm(self, name, amplitudes=None, initial=None, init="random",
         iterations=None):
    """DM with the settings' iterations, seed and curve spacing."""
    iterations = iterations or self.settings.dm_iterations
    config = dm.DMConfig(iterations=iterations, init=init,
                         seed=self.settings.dm_seed,
                         chunk=min(self.settings.curve_every, iterations),
                         progress=False)
    return self.solver(config, name, amplitudes, initial)

  def lsqml(self, name, amplitudes=None):
    """LSQML from a flat start for the settings' DM iterations."""
    iterations = self.settings.dm_iterations
    config = lsqml.LSQMLConfig(iterations=iterations, init="ones",
                               batch_size=self.settings.lsqml_batch_size,
                               chunk=min(self.settings.curve_every,
                                         iterations),
                               progress=False)
    return self.solver(config, name, amplitudes)

  def pnp(self, name, amplitudes=None):
    """Plug-and-play from a flat start for the settings' DM iterations."""
    iterations = self.settings.dm_iterations
    sigma = self.settings.pnp_sigma
    config = pnp.PnPConfig(iterations=iterations, prior=self.settings.prior,
                           denoiser=self.denoiser,
                           batch_size=self.settings.lsqml_batch_size,
                           data_steps=self.settings.pnp_data_steps,
                           progress=False,
                           **({} if sigma is None else dict(
                               sigma_start=sigma[0], sigma_end=sigma[1])))
    return self.solver(config, name, amplitudes)

  def pnp_name(self):
    steps = ("" if self.settings.pnp_data_steps == "lsqml" else
             f"{self.settings.pnp_data_steps.upper()} ")
    return f"{PNP} ({self.settings.dm_iterations} {steps}it, learned prior)"

  def timed_curve(self, curve, chi, seconds, offset=0.0):
    """A run's curve with its chi and the seconds per scan at each point.

    seconds: the run's seconds per scan for all DM iterations; offset: time
    spent before it (the network's, for a learned start).
    """
    per_iteration = seconds / self.settings.dm_iterations
    return dict(curve, chi=chi,
                seconds=offset + curve["iterations"] * per_iteration)

  def run(self):
    """Every method on the test scans.

    Returns:
      (results, curves, note) as `write_outputs` takes them.
    """
    settings, truths, mask = self.settings, self.truths, self.mask
    results, curves, note = {}, {}, {}
    for name, path in self.models:
      predict = load_predictor(path, self.geometry)
      objects, seconds = methods_lib.run_learned(predict, self.amplitudes)
      results[name] = _result(objects, seconds, truths, mask, learned=True)
      print(f"{name}: {seconds * 1e3:.1f} ms per scan")
    if settings.run_dm:
      objects, seconds, chi, curve = self.dm(DM_RANDOM)
      results[DM_RANDOM] = _result(objects, seconds, truths, mask)
      curves["random start"] = self.timed_curve(curve, chi, seconds)
      if settings.dm_flat_start:
        objects, seconds, chi, curve = self.dm(DM_FLAT, init="ones")
        results[DM_FLAT] = _result(objects, seconds, truths, mask)
        curves["flat start"] = self.timed_curve(curve, chi, seconds)
    if settings.run_lsqml:
      name = f"{LSQML} ({settings.dm_iterations} it, flat start)"
      objects, seconds, chi, curve = self.lsqml(name)
      results[name] = _result(objects, seconds, truths, mask)
      curves["LSQML, flat start"] = dict(
          self.timed_curve(curve, chi, seconds), label="LSQML from flat start")
    if settings.run_pnp:
      objects, seconds, chi, curve = self.pnp(self.pnp_name())
      results[self.pnp_name()] = _result(objects, seconds, truths, mask)
      curves["PnP, flat start"] = dict(
          self.timed_curve(curve, chi, seconds),
          label="PnP (learned prior) from flat start")
    if self.models:
      first = self.models[0][0]
      start = results[first]["objects"]
      objects, seconds, chi, curve = self.dm(f"{first}+DM", initial=start)
      results[f"{first}+DM"] = _result(
          objects, seconds + results[first]["seconds"], truths, mask)
      curves[f"{first} start"] = self.timed_curve(curve, chi, seconds,
                                                  results[first]["seconds"])
      if DM_RANDOM in results:
        note["speedup"] = (results[DM_RANDOM]["seconds"] /
                           results[first]["seconds"])
      dm_rows = [r for r in (DM_FLAT, DM_RANDOM) if r in results]
      if dm_rows and settings.dm_equal_time:
        # DM from a flat start for as many iterations as fit in the learned
        # model's seconds per scan (DM's steady time per iteration and
        # scan, measured in this run).
        per_iteration = (results[dm_rows[0]]["seconds"] /
                         settings.dm_iterations)
        count = max(1, int(results[first]["seconds"] // per_iteration))
        objects = self.dm(DM_EQUAL_TIME, init="ones", iterations=count)[0]
        name = f"{DM_EQUAL_TIME} ({count} it, flat start)"
        results[name] = _result(objects, count * per_iteration, truths, mask)
        note["equal_time"] = {"model": first, "iterations": count,
                              "seconds_per_iteration": per_iteration}
    # Reference: each object replaced by a constant, its own mean amplitude
    # and phase over the region (the best any featureless guess can score).
    objects = mean_objects(truths, mask)
    results[MEAN_OBJECT] = _result(objects, 0.0, truths, mask, panel=False)
    return results, curves, note

  def dose_sweep(self, out_dir):
    """The dose sweep (`doses.sweep`) of the settings' doses: writes
    doses.md, doses.json and doses.png; returns the report section."""
    settings = self.settings
    runs = []
    for name, path in self.models:
      predict = load_predictor(path, self.geometry)
      runs.append((name, lambda noisy, _, p=predict:
                   methods_lib.run_learned(p, noisy)))
    if settings.run_dm:
      runs.append((DM_FLAT, lambda noisy, _: self.dm(
          DM_FLAT, noisy, init="ones")[:2]))
    if settings.run_lsqml:
      name = f"{LSQML} ({settings.dm_iterations} it, flat start)"
      runs.append((name, lambda noisy, _, name=name: self.lsqml(
          name, noisy)[:2]))
    if settings.run_pnp:
      runs.append((self.pnp_name(), lambda noisy, _: self.pnp(
          self.pnp_name(), noisy)[:2]))
    if self.models:
      first = self.models[0][0]

      def learned_then_dm(noisy, earlier):
        start, start_seconds = earlier[first]
        objects, seconds = self.dm(f"{first}+DM", noisy, initial=start)[:2]
        return objects, seconds + start_seconds

      runs.append((f"{first}+DM", learned_then_dm))
    rows = doses_lib.sweep(
        self.amplitudes, list(settings.doses), runs,
        lambda objects: score(objects, self.truths, self.mask),
        seed=settings.seed, progress=lambda text: print(f"dose sweep: {text}"))
    table = report.dose_table(rows)
    files.write_text(os.path.join(out_dir, "doses.md"), table + "\n")
    files.write_json(os.path.join(out_dir, "doses.json"), [
        {"photons": None if math.isinf(r["photons"]) else r["photons"],
         "dose": doses_lib.label(r["photons"]), "method": r["method"],
         "seconds": r["seconds"],
         "mean": report.summarize(r["scores"]["scanned"]),
         "per_scan": r["scores"]["scanned"]} for r in rows], indent=1)
    report.save_dose_plot(os.path.join(out_dir, "doses.png"), rows,
                          title="PSNR against dose")
    return ("\n## Dose sweep\n\nEach test scan redrawn with Poisson noise at "
            "each dose (mean photons per pattern, scaled back to noise-free "
            "units; the same draw for every method), illuminated region, "
            "constant phase offset removed. DM from the first model adds the "
            "model's seconds.\n\n" + table +
            "\n\n![PSNR against dose](doses.png)\n")


def compare(data_dir, out_dir, models, settings, title=None, num_scans=0,
            split=None, denoiser=None):
  """The paper's comparison on a dataset's test split, with its report.

  Args:
    data_dir: a simulated dataset (tools/make_tfrecords.py).
    out_dir: where results.json, results.md, report.md and the figures go
      (and doses.* with settings.doses).
    models: [(name, SavedModel dir)]; the first one starts DM.
    settings: ComparisonSettings.
    title: the report's title (default: out_dir's name).
    num_scans: the first num_scans test scans; 0 = all.
    split: (amplitudes, truths, info) already read by `read_test_split`
      (None: read here).
    denoiser: the PnP row's prior as a callable (see `Comparison`).

  Returns:
    {"results": ..., "curves": ..., "note": ..., "tables": Markdown}.
  """
  if not (models or settings.run_dm or settings.run_lsqml or
          settings.run_pnp):
    raise UserError("nothing to evaluate: give a SavedModel, or run DM, "
                    "LSQML or PnP")
  if num_scans < 0:
    raise UserError(f"num_scans={num_scans} must be >= 0 (0: all)")
  amplitudes, truths, info = split or read_test_split(data_dir, num_scans)
  title = title or os.path.basename(os.path.normpath(out_dir))
  settings = dataclasses.replace(settings, data_dir=data_dir)
  print(f"evaluating {len(truths)} test scans of {data_dir}")
  comparison = Comparison(amplitudes, truths, info.geometry, models, settings,
                          denoiser)
  results, curves, note = comparison.run()
  tables = write_outputs(out_dir, title, info, truths, comparison.mask,
                         results, curves, note, settings)
  print(tables)
  if settings.doses:
    section = comparison.dose_sweep(out_dir)
    path = os.path.join(out_dir, "report.md")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    files.write_text(path, text + section)
    print(section)
  if "speedup" in note:
    print(f"PtychoNet is {speed_words(note['speedup'])} per scan than "
          f"{settings.dm_iterations} DM iterations")
  print(f"wrote {os.path.join(out_dir, 'report.md')}")
  return {"results": results, "curves": curves, "note": note,
          "tables": tables}
