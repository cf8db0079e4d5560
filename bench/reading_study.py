"""Read range-test curves again under every reading rule (issue 10's study of the reading).

    python bench/reading_study.py runs/rt-demo-e8/range_test.json runs/fm-rt-e8-*/range_test.json

A range test keeps its whole curve in range_test.json, so each reading the product offers can be
applied afterwards without another sweep: the accuracy or the loss curve, with or without the
ragged cut, base_lr from the curve (range) or as max_lr / 3 or / 4. Prints one Markdown table per
file: the bounds each reading suggests ("-" where the curve never improved; the rule column then
names the rule asked for).

It has no smoke mode of its own: it only reads files. tests/test_bench.py runs it on the
range_test.json of a 12-step range test on a small demo set.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

from clr_dist.bounds import RULES, suggest


def readings(result: dict, rise_fraction: float = 0.1, smooth_fraction: float = 0.05) -> list[tuple]:
    rows = []
    for method in ("accuracy", "loss"):
        for ragged in (0.2, None) if method == "accuracy" else (None,):
            for rule in RULES:
                cfg = SimpleNamespace(
                    method=method,
                    rule=rule,
                    rise_fraction=rise_fraction,
                    ragged_fraction=ragged,
                    smooth_fraction=smooth_fraction,
                )
                s = suggest(result["curve"], result["evaluations"], cfg)["suggestion"]
                label = f"{method}{', ragged 0.2' if ragged else ''}"
                # A suggestion may fall back to another rule (base_lr >= max_lr): show the one used.
                rows.append((label, s["rule"] if s else rule, s and s["base_lr"], s and s["max_lr"]))
    return rows


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        s = result["settings"]
        print(
            f"\n{path}: {s['model']}, {s['steps']} steps, LR {s['start_lr']:g} -> {s['end_lr']:g}, "
            f"{len(result['evaluations'])} evaluations of {s['eval_images']} images"
            + (f"; stopped: {result['stopped']}" if result.get("stopped") else "")
        )
        print("\n| curve | base_lr rule | base_lr | max_lr |\n|---|---|---|---|")
        for label, rule, base, top in readings(result):
            cells = ("-", "-") if base is None else (f"{base:.4g}", f"{top:.4g}")
            print(f"| {label} | {rule} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
