"""Tables and figures of an evaluation run: numpy and dicts in, files out.

`summarize` turns per-scan metric dicts into means and standard deviations;
`markdown_table` renders them; `save_panels` draws the paper's Tables 1-4
layout (rows: test objects; columns: ground truth and each method) for the
amplitude and the phase; `save_curves` draws the paper's Figure 3 (chi and
object MSE against DM iteration for a random and a PtychoNet start).
Everything is written to a temporary name and renamed when complete.
"""
import math

import numpy as np

from ptychonet_tf.evaluation import doses
from ptychonet_tf.utils import files

METRIC_KEYS = ("amplitude_psnr", "amplitude_ssim", "phase_psnr", "phase_ssim")


def summarize(per_scan):
  """Mean and standard deviation of each metric over scans.

  Args:
    per_scan: list of dicts with (at least) METRIC_KEYS float values.

  Returns:
    dict key -> {"mean": float, "std": float}; infinite PSNRs (exact
    agreement) are left out of the mean and counted in "exact".
  """
  out = {}
  for key in METRIC_KEYS:
    values = np.array([s[key] for s in per_scan], np.float64)
    finite = values[np.isfinite(values)]
    out[key] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std()) if finite.size else float("nan")}
    if finite.size < values.size:
      out[key]["exact"] = int(values.size - finite.size)
  return out


def _cell(stat, digits):
  if stat is None or math.isnan(stat["mean"]):
    return "n/a"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(rows, convention):
  """A Markdown table of methods against amplitude/phase PSNR and SSIM.

  Args:
    rows: list of (method name, summary dict from `summarize`, seconds per scan).
    convention: "scanned" or "paper", the summary key to show.

  Returns:
    str.
  """
  lines = ["| method | amplitude PSNR (dB) | amplitude SSIM | phase PSNR (dB) "
           "| phase SSIM | seconds / scan |",
           "|---|---|---|---|---|---|"]
  for name, summary, seconds in rows:
    s = summary[convention]
    lines.append(f"| {name} | {_cell(s['amplitude_psnr'], 2)} | "
                 f"{_cell(s['amplitude_ssim'], 3)} | {_cell(s['phase_psnr'], 2)} | "
                 f"{_cell(s['phase_ssim'], 3)} | {seconds:.4g} |")
  return "\n".join(lines)


def dose_table(rows, convention="scanned"):
  """A Markdown table of a dose sweep (`evaluation.doses.sweep` rows whose
  "scores" hold per-scan metrics in both conventions)."""
  lines = ["| photons / pattern | method | amplitude PSNR (dB) | amplitude SSIM "
           "| phase PSNR (dB) | phase SSIM | seconds / scan |",
           "|---|---|---|---|---|---|---|"]
  for row in rows:
    s = summarize(row["scores"][convention])
    lines.append(f"| {doses.label(row['photons'])} | {row['method']} | "
                 f"{_cell(s['amplitude_psnr'], 2)} | "
                 f"{_cell(s['amplitude_ssim'], 3)} | "
                 f"{_cell(s['phase_psnr'], 2)} | {_cell(s['phase_ssim'], 3)} "
                 f"| {row['seconds']:.4g} |")
  return "\n".join(lines)


def save_dose_plot(path, rows, title=None):
  """Amplitude and phase PSNR (lit region) against photons per pattern, one
  line per method; the noise-free dose sits at the right, labelled."""
  plt = _figure_module()
  finite = sorted({r["photons"] for r in rows if math.isfinite(r["photons"])})
  # Noise free drawn a decade right of the highest finite dose.
  free_x = (finite[-1] * 10) if finite else 1.0
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  names = list(dict.fromkeys(r["method"] for r in rows))
  for ax, key, part in zip(axes, ("amplitude_psnr", "phase_psnr"),
                           ("amplitude", "phase")):
    for i, name in enumerate(names):
      points = sorted(
          (free_x if math.isinf(r["photons"]) else r["photons"],
           summarize(r["scores"]["scanned"])[key]["mean"])
          for r in rows if r["method"] == name)
      ax.plot([p[0] for p in points], [p[1] for p in points],
              marker="os^vD<>ph*"[i % 10], label=name)
    ax.set_xscale("log")
    ticks = finite + ([free_x] if any(math.isinf(r["photons"]) for r in rows)
                      else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in finite] +
                       (["noise\nfree"] if len(ticks) > len(finite) else []))
    ax.minorticks_off()
    ax.set_xlabel("photons per pattern")
    ax.set_ylabel(f"{part} PSNR (dB, lit region)")
    ax.grid(True, alpha=0.3)
  _save_with_legend(plt, fig, axes[0], path, title)


def _save_with_legend(plt, fig, legend_axes, path, title, fontsize=7):
  """Legends on `legend_axes` (one axes or several), an optional title,
  then the PNG; closes `fig`."""
  for ax in np.atleast_1d(legend_axes):
    ax.legend(fontsize=fontsize)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  files.save_figure(path, fig, dpi=90)
  plt.close(fig)


def _figure_module():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_panels(path, truths, estimates, part, value_range, title=None,
                mask=None):
  """A grid of images: one row per test object, truth then each method.

  Args:
    path: PNG file to write.
    truths: complex [S, H, W] ground truth.
    estimates: dict method name -> complex [S, H, W] (already aligned to the
      truth's global phase).
    part: "amplitude" or "phase".
    value_range: (vmin, vmax) shared by every panel (the object's range).
    title: optional figure title.
    mask: optional bool [H, W]; pixels outside it are drawn gray in every
      panel (methods differ there only in what they assume of unmeasured
      pixels).
  """
  plt = _figure_module()
  cmap = plt.get_cmap("gray").copy()
  cmap.set_bad("#b0b0b0")
  take = np.abs if part == "amplitude" else np.angle
  columns = [("ground truth", truths)] + list(estimates.items())
  rows = truths.shape[0]
  fig, axes = plt.subplots(rows, len(columns),
                           figsize=(2.2 * len(columns), 2.2 * rows + 0.4),
                           squeeze=False)
  for r in range(rows):
    for c, (name, images) in enumerate(columns):
      ax = axes[r, c]
      image = take(images[r]).astype(np.float64)
      if mask is not None:
        image = np.where(mask, image, np.nan)
      ax.imshow(image, cmap=cmap, vmin=value_range[0], vmax=value_range[1],
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  files.save_figure(path, fig, dpi=90)
  plt.close(fig)


def save_curves(path, curves, title=None):
  """chi and object MSE against iteration (the paper's Figure 3).

  Args:
    path: PNG file to write.
    curves: dict start name -> {"chi": float [T], "iterations": int [K],
      "mse": float [K], optional "label"} (means over the test scans); the
      legend shows the label, else the name.
    title: optional figure title.
  """
  plt = _figure_module()
  fig, (ax_chi, ax_mse) = plt.subplots(1, 2, figsize=(9, 3.4))
  for name, c in curves.items():
    chi = np.asarray(c["chi"])
    label = c.get("label", name)
    ax_chi.semilogy(np.arange(1, chi.size + 1), chi, label=label)
    ax_mse.semilogy(c["iterations"], c["mse"], marker=".", label=label)
  ax_chi.set_xlabel("iteration")
  ax_chi.set_ylabel("chi = ||O_t - O_{t-1}|| / ||O_t||")
  ax_mse.set_xlabel("iteration")
  ax_mse.set_ylabel("object MSE vs truth (lit region)")
  for ax in (ax_chi, ax_mse):
    ax.grid(True, which="both", alpha=0.3)
  _save_with_legend(plt, fig, [ax_chi, ax_mse], path, title, fontsize=8)


def save_time_to_quality(path, curves, points, title=None):
  """Amplitude and phase PSNR against seconds per scan (log time axis).

  Args:
    path: PNG file to write.
    curves: dict start name -> {"seconds", "amplitude_psnr", "phase_psnr":
      float [K], optional "label"}: DM from that start after increasing
      iteration counts (labelled "DM from <start name>" unless the curve
      has a label, e.g. another solver's).
    points: dict name -> (seconds, amplitude PSNR, phase PSNR): one-shot
      methods (a learned model).
    title: optional figure title.
  """
  plt = _figure_module()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  markers = "os^vD<>ph*"
  for ax, key, label in zip(axes, ("amplitude_psnr", "phase_psnr"),
                            ("amplitude", "phase")):
    for name, c in curves.items():
      ax.plot(c["seconds"], c[key], marker=".",
              label=c.get("label", f"DM from {name}"))
    for i, (name, values) in enumerate(points.items()):
      ax.plot(values[0], values[1 if key == "amplitude_psnr" else 2],
              linestyle="none", marker=markers[i % len(markers)],
              markersize=9, label=name)
    ax.set_xscale("log")
    # Labels at 1, 2 and 5 per decade in plain numbers: a span of under a
    # decade otherwise gets overlapping "2x10^-2"-style minor labels.
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("seconds per scan")
    ax.set_ylabel(f"{label} PSNR (dB, lit region)")
    ax.grid(True, which="both", alpha=0.3)
  _save_with_legend(plt, fig, axes[0], path, title)
