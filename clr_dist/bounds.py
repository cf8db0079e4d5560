"""Reading an LR range test's curve: where accuracy (or loss) starts to improve and where it stops.

The paper (Smith 2015, §3.3) reads ``base_lr`` where accuracy starts to rise and ``max_lr``
where it slows, turns ragged or falls. This module does that reading, turns it into the
suggested bounds, formats them for the console, and reads them back from ``range_test.json``
for ``schedule.bounds_from``. It imports nothing of the package but its errors, so the config,
the reporter and the commands can all use it; the sweep itself is in ``clr_dist.range_test``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Protocol

from clr_dist.errors import ConfigError

METHODS = ("auto", "accuracy", "loss")
RULES = ("range", "third", "quarter")
MIN_EVALUATIONS = 5  # method=auto reads the accuracy curve from this many points on


class ReadingSettings(Protocol):
    """How to read a curve: the ``range_test`` config node has these fields."""

    method: str
    rule: str
    rise_fraction: float
    ragged_fraction: Optional[float]
    smooth_fraction: float


def smoothing_window(points: int, smooth_fraction: float) -> int:
    """``smooth_fraction`` of the points, odd, at least 3."""
    return max(3, round(smooth_fraction * points)) | 1


def centred_mean(values: Sequence[float], window: int) -> list[float]:
    """Moving average over ``window`` points centred on each point (narrower near the ends, so
    still centred): unlike a trailing average, it does not move the curve to the right."""
    half = window // 2
    smoothed = []
    for i in range(len(values)):
        h = min(half, i, len(values) - 1 - i)
        smoothed.append(sum(values[i - h : i + h + 1]) / (2 * h + 1))
    return smoothed


def read_bounds_off(
    lrs: Sequence[float],
    values: Sequence[float],
    *,
    higher_is_better: bool,
    rise_fraction: float,
    smooth_fraction: float,
    ragged_fraction: float | None = None,
) -> dict | None:
    """Where a curve starts to improve and where it stops, as the paper reads Figure 3.

    The curve is smoothed (centred), then turned so that up is better. From its low point before
    the best, ``base_lr`` is the first LR past ``rise_fraction`` of the whole improvement, and
    ``max_lr`` the first LR within ``rise_fraction`` of the best (where the rise has slowed to a
    plateau, or is about to fall). With ``ragged_fraction``, the rise is also cut short where it
    turns ragged: the first point (unsmoothed) that falls more than that share of the whole rise
    below the best point before it; ``max_lr`` is then that best point's LR. All thresholds are
    shares of the curve's own range, so multiplying the loss by a constant changes nothing. None
    when nothing improved.
    """
    if len(values) < 3:
        return None
    up = [v if higher_is_better else -v for v in values]
    smoothed = centred_mean(up, smoothing_window(len(values), smooth_fraction))
    best = max(range(len(smoothed)), key=smoothed.__getitem__)
    low = min(range(best + 1), key=smoothed.__getitem__)
    rise = smoothed[best] - smoothed[low]
    if not rise > 0:
        return None
    base = next(i for i in range(low, best + 1) if smoothed[i] >= smoothed[low] + rise_fraction * rise)
    top = next(i for i in range(base, best + 1) if smoothed[i] >= smoothed[best] - rise_fraction * rise)
    ragged = None
    if ragged_fraction is not None:
        peak = base
        for i in range(base, top + 1):
            if up[peak] - up[i] > ragged_fraction * rise:
                ragged, top = i, peak
                break
            peak = max(peak, i, key=up.__getitem__)
    return {
        "base_lr": lrs[base],
        "max_lr": lrs[top],
        "best_lr": lrs[best],
        "ragged_lr": None if ragged is None else lrs[ragged],
    }


def suggest(curve: dict, evaluations: list[dict], cfg: ReadingSettings) -> dict:
    """Both readings (accuracy, loss), the chosen one, and the rule-of-thumb alternatives."""
    common = {"rise_fraction": cfg.rise_fraction, "smooth_fraction": cfg.smooth_fraction}
    finite = [(lr, loss) for lr, loss in zip(curve["lr"], curve["loss"]) if math.isfinite(loss)]
    readings = {
        # Each evaluation measures the same held-out images, so a fall between two is the curve
        # turning ragged. Each loss is one batch's: its noise alone would look ragged.
        "accuracy": read_bounds_off(
            [e["lr"] for e in evaluations],
            [e["top1"] for e in evaluations],
            higher_is_better=True,
            ragged_fraction=cfg.ragged_fraction,
            **common,
        ),
        "loss": read_bounds_off(
            [lr for lr, _ in finite], [loss for _, loss in finite], higher_is_better=False, **common
        ),
    }
    method = cfg.method
    if method == "auto":
        method = "accuracy" if len(evaluations) >= MIN_EVALUATIONS and readings["accuracy"] else "loss"
    reading = readings[method]
    if reading is None:
        return {
            "readings": readings,
            "suggestion": None,
            "problem": f"the {method} never improved over the sweep: widen the range (range_test.start_lr/end_lr) "
            f"or sweep longer",
        }
    max_lr = reading["max_lr"]
    rules = {"range": reading["base_lr"], "third": max_lr / 3, "quarter": max_lr / 4}
    base_lr, rule = rules[cfg.rule], cfg.rule
    if base_lr >= max_lr:  # the rise was one step: the curve cannot tell the two apart
        base_lr, rule = rules["quarter"], "quarter"
    suggestion = {"base_lr": base_lr, "max_lr": max_lr, "method": method, "rule": rule}
    return {"readings": readings, "suggestion": suggestion, "rules": rules}


def read_bounds(path: str) -> tuple[float, float]:
    """``(base_lr, max_lr)`` from a ``range_test.json``, for ``schedule.bounds_from``."""
    try:
        result = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"schedule.bounds_from={path!r} cannot be read ({exc.strerror}); "
            f"give the range_test.json that `clr-dist range-test` wrote"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"schedule.bounds_from={path!r} is not JSON; give the range_test.json that `clr-dist range-test` wrote"
        ) from exc
    suggestion = result.get("suggestion") if isinstance(result, dict) else None
    if not suggestion:
        raise ConfigError(
            f"schedule.bounds_from={path!r} holds no suggested bounds"
            + (f": {result['problem']}" if isinstance(result, dict) and result.get("problem") else "")
        )
    return float(suggestion["base_lr"]), float(suggestion["max_lr"])


def format_suggestion(result: dict, json_path: Path) -> str:
    suggestion = result["suggestion"]
    lines = []
    if result["stopped"]:
        lines.append(f"The sweep stopped early: {result['stopped']}.")
    if suggestion is None:
        lines.append(f"No bounds suggested: {result['problem']}.")
        return "\n".join(lines)
    lines.append(
        f"Suggested bounds (read off the {suggestion['method']} curve, base_lr by the {suggestion['rule']} "
        f"rule): base_lr {suggestion['base_lr']:.4g}, max_lr {suggestion['max_lr']:.4g}"
    )
    ragged_lr = result["readings"][suggestion["method"]]["ragged_lr"]
    if ragged_lr is not None:
        lines.append(f"  the accuracy turned ragged at LR {ragged_lr:.4g}: max_lr is the best point before it")
    names = {"range": "where the rise starts", "third": "max_lr/3", "quarter": "max_lr/4"}
    others = [f"{names[rule]} = {value:.4g}" for rule, value in result["rules"].items() if rule != suggestion["rule"]]
    lines += [
        f"  alternatives: base_lr = {', '.join(others)}",
        "Train with them:",
        f"  clr-dist train schedule.base_lr={suggestion['base_lr']:.4g} schedule.max_lr={suggestion['max_lr']:.4g}",
        f"  clr-dist train schedule.bounds_from={json_path}",
    ]
    return "\n".join(lines)
