"""PNG previews: I(q) log-log, maps with colour bars, cakes, kinetics."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, curves: list, units: str) -> None:  # list of (label, Curve)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for label, c in curves:
        good = c.i > 0
        (line,) = ax.plot(c.q[good], c.i[good], "-", lw=0.8, label=label)
        if len(curves) == 1:  # the ±σ band
            lo = np.clip(c.i[good] - c.sigma[good], c.i[good] * 1e-3, None)
            ax.fill_between(c.q[good], lo, c.i[good] + c.sigma[good], color=line.get_color(), alpha=0.3, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("q (1/Å)")
    ax.set_ylabel(f"I(q) ({units})")
    if len(curves) <= 8:
        ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.16, right=0.95, bottom=0.12, top=0.93)
    fig.savefig(path)
    plt.close(fig)


def plot_map(path: Path, grid, image: np.ndarray, title: str, units: str, xname: str, yname: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    dx = grid.step_x or 1.0
    dy = grid.step_y or 1.0
    extent = [grid.x[0] - dx / 2, grid.x[-1] + dx / 2, grid.y[0] - dy / 2, grid.y[-1] + dy / 2]
    im = ax.imshow(np.ma.masked_invalid(image), origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=f"{title} ({units})")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title)
    fig.subplots_adjust(left=0.16, right=0.95, bottom=0.12, top=0.93)
    fig.savefig(path)
    plt.close(fig)


def plot_cake(path: Path, cake, units: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    img = np.ma.masked_invalid(np.where(cake.i > 0, cake.i, np.nan))
    im = ax.imshow(
        np.log10(img),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=[cake.q[0], cake.q[-1], cake.chi[0], cake.chi[-1]],
    )
    fig.colorbar(im, ax=ax, label=f"log10 I ({units})")
    ax.set_xlabel("q (1/Å)")
    ax.set_ylabel("χ (degrees)")
    fig.subplots_adjust(left=0.16, right=0.95, bottom=0.12, top=0.93)
    fig.savefig(path)
    plt.close(fig)


def plot_kinetics(path: Path, times: np.ndarray, table: np.ndarray, units: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), dpi=100, sharex=True)
    axes[0].errorbar(times, table[:, 0], yerr=table[:, 1], fmt="o-", ms=3)
    axes[0].set_ylabel("Rg (Å)")
    axes[1].errorbar(times, table[:, 2], yerr=table[:, 3], fmt="o-", ms=3)
    axes[1].set_ylabel(f"I(0) ({units})")
    axes[2].errorbar(times, table[:, 7], yerr=table[:, 8], fmt="o-", ms=3)
    axes[2].set_ylabel("invariant Q*")
    axes[2].set_xlabel("time (s)")
    fig.subplots_adjust(left=0.16, right=0.95, bottom=0.12, top=0.93)
    fig.savefig(path)
    plt.close(fig)
