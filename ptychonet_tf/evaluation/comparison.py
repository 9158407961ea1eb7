"""The paper's comparison on a dataset's test split: scores, tables, figures.

`python -m ptychonet_tf.evaluate` reads the test split (`read_test_split`),
runs each method (`evaluation.methods`), scores every reconstruction in both
conventions (`score`) and writes the report (`write_outputs`). The settings
that shape the report come in a `ReportSettings`; nothing here reads flags.
"""
import dataclasses
import os
import types
from typing import Sequence

import numpy as np

from ptychonet_tf.evaluation import metrics
from ptychonet_tf.evaluation import report
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

MEAN_OBJECT = "Mean object (reference)"
DM_RANDOM = "DM (random start)"
DM_FLAT = "DM (flat start)"
DM_EQUAL_TIME = "DM at equal time"
LSQML = "LSQML"


@dataclasses.dataclass(frozen=True)
class ReportSettings:
  """What a comparison report says about how it was made.

  Attributes:
    data_dir: the dataset directory (named in the report).
    dm_iterations: DM iterations of every DM row (and of the LSQML row).
    region_fraction: the metrics' region (summed illumination threshold).
    num_panels: test objects drawn in the image panels.
    command: the command line that produced the report (a list of words).
  """
  data_dir: str
  dm_iterations: int = 300
  region_fraction: float = 0.01
  num_panels: int = 3
  command: Sequence[str] = ()


def read_test_split(data_dir, limit=0):
  """The test split of a dataset as arrays.

  Args:
    data_dir: a dataset directory (tools/make_tfrecords.py).
    limit: the first `limit` scans; 0 = all.

  Returns:
    (amplitudes float32 [S, N, h, w], truth complex64 [S, H, W],
     data.pipeline.DatasetInfo).
  """
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  info = pipeline.load_dataset_info(data_dir)
  if info.counts.get("test", 0) == 0:
    raise UserError(f"dataset {data_dir} has no test scans")
  if not info.objects:
    raise UserError(f"dataset {data_dir} holds measured scans without "
                    f"objects, so there is nothing to score against; "
                    f"reconstruct them with python -m "
                    f"ptychonet_tf.reconstruct")
  amplitudes, truths = [], []
  # A damaged record ends in one line naming its shard, not a DataLossError.
  with pipeline.naming_damaged_records(data_dir, "test"):
    for batch in pipeline.make_dataset(data_dir, "test", batch_size=8,
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


def load_predictor(path, geometry):
  """A model.inference.PtychoNetModel for scans of `geometry`.

  Its input and output shapes (and its layout and probe, when it records
  them) are checked against the geometry: float32 [N, h, w] -> complex64
  [H, W].
  """
  from ptychonet_tf.model import inference  # pylint: disable=g-import-not-at-top
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
      "amplitude_psnr", "phase_psnr"} (see methods.run_dm; "seconds" per
      scan at each point).
    note: dict, optional "speedup" (DM seconds / network seconds) and
      "equal_time" (model, iterations, seconds_per_iteration of the "DM at
      equal time" row).
    settings: ReportSettings.

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
    speed += (f"\nPtychoNet is **{note['speedup']:.0f}x** faster per scan than "
             f"{settings.dm_iterations} DM iterations (same machine, same "
             f"run).\n")
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
