"""Training curves (PNG) and the per-epoch metrics (a CSV in the output; MLflow on Azure ML)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

METRICS_FILE = "training_metrics.csv"
SIZE = (800, 320)  # two panels side by side
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")  # matplotlib's first three
_MARGIN = (48, 26, 12, 38)  # left, top, right, bottom of each panel's plot area


def plot_curves(history, path: Path) -> None:
    """Loss and accuracy per epoch side by side, one PNG.

    Drawn with Pillow: importing matplotlib and rendering the same two panels
    took 0.7 s of every run, longer than all the rest of the bookkeeping.
    """
    from PIL import Image, ImageDraw, ImageFont

    epochs = [h.epoch for h in history]
    losses = [("train loss", [h.train_loss for h in history]), ("validation loss", [h.valid_loss for h in history])]
    accuracies = [("train accuracy", [1 - h.train_error for h in history]),
                  ("validation top-1", [h.top1 for h in history]), ("validation top-5", [h.top5 for h in history])]
    finite = [v for _, values in losses for v in values if math.isfinite(v)]
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    half = SIZE[0] // 2
    _panel(draw, font, (0, 0, half, SIZE[1]), "loss", epochs, losses, _ticks(max(finite, default=1.0)))
    _panel(draw, font, (half, 0, SIZE[0], SIZE[1]), "accuracy", epochs, accuracies, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    image.save(path)


def _ticks(top: float) -> list[float]:
    """0 to a round number at or above `top`, in 3 to 6 round steps."""
    if not top > 0:
        top = 1.0
    step = 10 ** math.floor(math.log10(top / 5))
    for factor in (1, 2, 2.5, 5, 10):
        if top / (step * factor) <= 5:
            step *= factor
            break
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _panel(draw, font, box, title, epochs, series, y_ticks) -> None:
    left, top = box[0] + _MARGIN[0], box[1] + _MARGIN[1]
    right, bottom = box[2] - _MARGIN[2], box[3] - _MARGIN[3]
    first, last = min(epochs), max(epochs)
    pad = max((last - first) * 0.05, 0.5)
    x0, x1 = first - pad, last + pad
    y0, y1 = y_ticks[0], y_ticks[-1] * 1.01

    def at(epoch, value):
        y = min(max(value, y0), y1)  # a diverged loss is drawn at the edge
        return left + (epoch - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.text(((left + right) / 2, box[1] + 6), title, fill="black", font=font, anchor="mt")
    for value in y_ticks:
        _, y = at(first, value)
        draw.line([(left, y), (right, y)], fill="#e6e6e6")
        draw.text((left - 5, y), f"{value:g}", fill="black", font=font, anchor="rm")
    every = max(1, math.ceil(len(epochs) / 10))
    for epoch in epochs[::every]:
        x, _ = at(epoch, y0)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 6), str(epoch), fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, box[3] - 4), "epoch", fill="black", font=font, anchor="mb")
    draw.rectangle([left, top, right, bottom], outline="black")
    for color, (_, values) in zip(COLORS, series):
        points = [at(e, v) if math.isfinite(v) else None for e, v in zip(epochs, values)]
        for a, b in zip(points, points[1:]):
            if a and b:
                draw.line([a, b], fill=color, width=2)
        for p in filter(None, points):
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)
    # The legend in the right-hand corner away from where the curves end.
    ends = [values[-1] for _, values in series if math.isfinite(values[-1])]
    high = bool(ends) and sum(ends) / len(ends) > (y0 + y1) / 2
    row = 16
    width = 30 + max(draw.textlength(name, font=font) for name, _ in series)
    lx = right - 8 - width
    ly = bottom - 8 - row * len(series) if high else top + 8
    draw.rectangle([lx - 6, ly - 4, right - 4, ly + row * len(series)], fill="white", outline="#cccccc")
    for i, (color, (name, _)) in enumerate(zip(COLORS, series)):
        cy = ly + row * i + row / 2 - 2
        draw.line([(lx, cy), (lx + 20, cy)], fill=color, width=2)
        draw.ellipse([lx + 7, cy - 3, lx + 13, cy + 3], fill=color)
        draw.text((lx + 26, cy), name, fill="black", font=font, anchor="lm")


def epoch_metrics(result) -> dict[str, float]:
    """An EpochResult as metric names (the epoch is the step): the CSV's columns and MLflow's metrics."""
    row = asdict(result)
    row.pop("epoch")
    row["learning_rate"] = row.pop("lr")
    return row
