"""Figures of measured runs (matplotlib, no display needed): PNG, or SVG by the file's suffix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prequential.measure import MeasureResult, crossings


def _axes(rows: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 * rows), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def _unit(result: MeasureResult) -> str:
    return "byte" if result.vocab_size == 256 else "token"


def _running_rate(result: MeasureResult) -> tuple[np.ndarray, np.ndarray]:
    """Bits per token over the last 2 % of the data (at least one segment), against tokens seen:
    the same window in tokens for every run, whatever its segment size."""
    tokens, bits = result.curve()
    done_tokens, done_bits = np.concatenate([[0], tokens]), np.concatenate([[0.0], bits])
    window = max(result.n_tokens // 50, 1)
    lag = np.minimum(np.searchsorted(done_tokens, done_tokens[1:] - window), np.arange(len(tokens)))
    span = done_tokens[1:] - done_tokens[lag]
    return tokens, (done_bits[1:] - done_bits[lag]) / np.maximum(span, 1)


def learning_curve(result: MeasureResult, path: str | Path, title: str) -> None:
    """Cumulative description length and running loss of one run."""
    fig, (top, bottom) = _axes(2)
    tokens, bits = result.curve()
    top.plot(tokens, (bits + 8 * result.code_bytes) / 8000, label="model code + sum of losses")
    top.axhline(8 * result.code_bytes / 8000, color="grey", linestyle=":", label="model code")
    top.set_ylabel("description length (KB)")
    top.legend(loc="upper left")
    top.set_title(title)
    bottom.plot(*_running_rate(result))
    bottom.set_ylabel(f"bits/{_unit(result)} (running, last 2 % of data)")
    bottom.set_xlabel("tokens seen")
    fig.tight_layout()
    fig.savefig(path)


def comparison(results: dict[str, MeasureResult], path: str | Path, title: str) -> None:
    """Cumulative description length (code included) of several runs on the same data, the
    difference of each to the first, and their running losses; crossings are marked."""
    fig, (top, middle, bottom) = _axes(3)
    names = list(results)
    first = results[names[0]]
    first_tokens, first_bits = first.curve()
    for name, result in results.items():
        tokens, bits = result.curve()
        total = bits + 8 * result.code_bytes
        baseline = np.interp(tokens, first_tokens, first_bits) + 8 * first.code_bytes  # segment grids may differ
        top.plot(tokens, total / 8000, label=name)
        if result is not first:
            middle.plot(tokens, (total - baseline) / 8000, label=f"{name} - {names[0]}")
        bottom.plot(*_running_rate(result), label=name)
        for at in crossings(result, first) if result is not first else []:
            middle.axvline(at, color="grey", linestyle=":")
    top.set_ylabel("description length (KB)")
    top.set_title(title)
    top.legend(loc="upper left")
    middle.axhline(0, color="black", linewidth=0.5)
    middle.set_ylabel("difference (KB)")
    middle.legend(loc="lower left")
    bottom.set_ylabel(f"bits/{_unit(first)} (running, last 2 % of data)")
    bottom.set_xlabel("tokens seen")
    fig.tight_layout()
    fig.savefig(path)
