"""Learning curves of a fine-tuning run: per-step and smoothed training loss (nats per target
token) and the held-out development score (percent) against optimizer steps. PNG + SVG + CSV."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from langneurons.artefacts import write_text
from langneurons.errors import LangNeuronsError
from langneurons.figures import save_figure

CHANCE = {"xnli": 100.0 / 3}
"""Dev score of a uniform guess, drawn as a reference line (percent)."""


def curve_rows(metadata: dict) -> list[dict]:
    """One row per optimizer step: ``step``, ``loss``, ``smoothed_loss`` and, at the steps where
    the development set was scored, ``dev_score`` (percent; empty elsewhere)."""
    losses, smooth = metadata.get("losses", []), metadata.get("smoothed_loss", [])
    dev = {point["step"]: point["dev_score"] for point in metadata.get("curve", [])}
    rows = [{"step": 0, "loss": "", "smoothed_loss": "", "dev_score": dev[0]}] if 0 in dev else []
    for index, loss in enumerate(losses):
        step = index + 1
        rows.append({"step": step, "loss": loss, "smoothed_loss": smooth[index] if index < len(smooth) else "",
                     "dev_score": dev.get(step, "")})
    return rows


def learning_curve_figure(metadata: dict, title: str = "learning curve") -> Figure:
    losses = metadata.get("losses", [])
    if not losses:
        raise LangNeuronsError("the fine-tuning metadata holds no losses to plot")
    steps = list(range(1, len(losses) + 1))
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss (one step)")
    if metadata.get("smoothed_loss"):
        ax.plot(steps, metadata["smoothed_loss"], color="tab:blue", linewidth=1.8, label="loss (moving average)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats per target token)")
    curve = metadata.get("curve", [])
    handles, labels = ax.get_legend_handles_labels()
    if curve:
        dev_ax = ax.twinx()
        metric = curve[0].get("dev_metric", "score")
        line = dev_ax.plot([p["step"] for p in curve], [p["dev_score"] for p in curve], "o-", color="tab:red",
                           label=f"dev {metric} (n={curve[0]['dev_n']})")
        chance = CHANCE.get(metadata.get("task", ""))
        if chance is not None:
            dev_ax.axhline(chance, color="tab:red", linestyle=":", linewidth=1)
        dev_ax.set_ylabel(f"development {metric}" + ("" if metric == "perplexity" else " (%)"))
        handles += line
        labels += [line[0].get_label()]
        kept = (metadata.get("early_stopping") or {}).get("best_step")
        if kept is not None:  # early stopping: the adapter kept
            marker = dev_ax.axvline(kept, color="tab:green", linestyle="--", linewidth=1, label=f"kept (step {kept})")
            handles.append(marker)
            labels.append(marker.get_label())
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(title)
    return figure


def write_learning_curve(metadata: dict, out_dir: str | Path, name: str = "learning_curve",
                         title: str = "learning curve") -> list[Path]:
    """``name.csv`` (:func:`curve_rows`) and ``name.png``/``.svg`` in ``out_dir``."""
    from langneurons.tables import rows_to_csv

    out_dir = Path(out_dir)
    paths = [write_text(out_dir / f"{name}.csv", rows_to_csv(curve_rows(metadata),
                                                             ("step", "loss", "smoothed_loss", "dev_score")))]
    return paths + save_figure(learning_curve_figure(metadata, title), out_dir, name)
