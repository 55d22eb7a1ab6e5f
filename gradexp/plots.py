"""Pictures of run folders, drawn with matplotlib (imported only when a picture is asked for).

`compare_plot` puts several runs side by side: validation accuracy per epoch, the per-layer kernel
gradient norm at the last epoch, and the backpropagated signal ‖δ‖ per layer at initialisation.
`layer_heatmap` shows one run's log10 gradient norm per epoch and layer.
Files are written to a temporary name in the target folder and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .compare import run_labels
from .errors import GradexpError
from .runs import Run, is_run_dir, layers_by_epoch, may_hold_runs


def check_path(target: str | Path) -> Path:
    """The --plot target, checked before anything is printed and without creating anything: a name ending
    in .png, not a folder, under a folder that exists or can be made and is writable. Raises GradexpError
    naming the problem and the fix."""
    text = str(target)
    if text == "":  # Path("") would be the current folder
        raise GradexpError("--plot '': give a file name ending in .png, e.g. compare.png")
    path = Path(text)
    if path.is_dir():
        # A folder of runs is no place for the plot: `compare runs/*` would then meet it among the runs.
        if is_run_dir(path):  # beside the folder that holds it
            example = path.parent.parent / "compare.png"
        elif may_hold_runs(path):
            example = path.parent / "compare.png"
        else:
            example = path / "compare.png"
        raise GradexpError(f"--plot {text}: {text} is a folder; give a file name, such as {example}")
    for folder in Path(os.path.abspath(path)).parents:  # a run folder holds one run's own files
        if is_run_dir(folder):
            raise GradexpError(f"--plot {text}: {os.path.relpath(folder)} is a run folder; put the plot beside "
                               f"it, such as {os.path.relpath(folder.parent / path.name)}")
    if path.suffix.lower() != ".png":
        raise GradexpError(f"--plot {text}: the plot is a PNG image; give a file name ending in .png, e.g. compare.png")
    folder = path.parent
    try:
        while not folder.exists():  # the nearest existing folder; the missing ones are made when drawing
            if folder.is_symlink():
                raise GradexpError(f"--plot {text}: {folder} is a broken symbolic link (or a loop of them); "
                                   "fix the link or choose another path")
            folder = folder.parent
    except OSError as exc:
        raise GradexpError(f"--plot {text}: cannot look into {folder}: {exc.strerror}; choose another path") from None
    if not folder.is_dir():
        raise GradexpError(f"--plot {text}: {folder} is a file, not a folder; choose a path in a folder")
    try:  # a real write, not os.access: also catches read-only mounts and /proc-like folders
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise GradexpError(f"--plot {text}: cannot write in the folder {folder} ({exc.strerror or exc}); "
                           "choose a path in a writable folder") from None
    return path


def _prepare(target: str | Path) -> Path:
    """check_path, then create the folders it needs."""
    path = check_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradexpError(f"--plot {path}: cannot create the folder {path.parent}: {exc.strerror}") from None
    return path


MAX_LEGEND = 75  # names in the compare plot's legend (three columns); more runs are described, not named
LABEL_CHARS = 40  # a legend name's length at most


def _figure(**kwargs: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _save(fig: Any, path: Path) -> None:
    """Save beside the target under a hidden unique name (created with the usual umask permissions,
    unlike mkstemp's 0600), then rename over it."""
    tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
    try:
        with warnings.catch_warnings():  # layout notices are matplotlib's business, not a line on our stderr
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GradexpError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _labels(runs: list[Run]) -> list[str]:
    """Each run's config name; where two runs share one, the folder name, with as many parent folders
    as it takes to tell them apart (as `compare`'s run column does)."""
    names = [str(r.config.get("name") or r.run.get("name") or r.name) for r in runs]
    return [n if names.count(n) == 1 else f for n, f in zip(names, run_labels(runs), strict=True)]


def _layer_curve(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(i, r[key]) for i, r in enumerate(rows, start=1) if _positive(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _finish_axes(ax: Any, drawn: bool, log: bool, empty: str | None = "no data recorded") -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and layer numbers
    if not drawn:
        if empty:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="grey")
    elif log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


def _accuracy_panel(ax: Any, runs: list[Run], colors: list[Any]) -> None:
    drawn = False
    for run, color in zip(runs, colors, strict=True):
        points = [(h["epoch"], h["val_accuracy"]) for h in run.history
                  if isinstance(h.get("epoch"), int) and isinstance(h.get("val_accuracy"), int | float)
                  and math.isfinite(h["val_accuracy"])]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color)
            drawn = True
    ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    _finish_axes(ax, drawn, log=False)


def _layer_panel(ax: Any, runs: list[Run], colors: list[Any], labels: list[str], key: str, epoch: str,
                 title: str) -> None:
    """One line per run across the layers of the first (epoch='first') or last measured epoch. A run
    measured there with no value above 0 (a dead net's zeros) cannot be drawn on the log axis: it is
    named in the panel instead of vanishing."""
    drawn, left_out = False, {"all 0": [], "no finite value": []}
    for run, color, label in zip(runs, colors, labels, strict=True):
        epochs = layers_by_epoch(run.layers)
        if not epochs:
            continue
        rows = epochs[min(epochs) if epoch == "first" else max(epochs)]
        xs, ys = _layer_curve(rows, key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color=color)
            drawn = True
        else:  # zeros cannot sit on a log axis; overflowed cells are empty
            zeros = all(isinstance(r.get(key), int | float) and r[key] == 0 for r in rows)
            left_out["all 0" if zeros else "no finite value"].append(label)
    ax.set(title=title, xlabel="layer (1 = first hidden, last = output)")
    notes = [f"{why}, not drawn: " + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
             for why, names in left_out.items() if names]
    if notes:
        ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize="small", color="grey", va="bottom")
    _finish_axes(ax, drawn, log=True, empty=None if notes else "no data recorded")


def _short_label(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def compare_plot(runs: list[Run], path: str | Path) -> Path:
    """Three panels, one colour per run: val accuracy per epoch, ‖∂L/∂W‖ per layer at the last
    epoch, ‖δ‖ per layer at initialisation (epoch 0). Returns the path written."""
    path = _prepare(path)
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    fig = _figure(figsize=(16, 4.8))
    axes = fig.subplots(1, 3)
    cmap = colormaps["tab10" if len(runs) <= 10 else "viridis"]
    colors = [cmap(i if len(runs) <= 10 else i / max(len(runs) - 1, 1)) for i in range(len(runs))]
    _accuracy_panel(axes[0], runs, colors)
    labels = [_short_label(label) for label in _labels(runs)]
    _layer_panel(axes[1], runs, colors, labels, "grad_norm", "last", "Kernel gradient norm ‖∂L/∂W‖, last measured epoch")
    _layer_panel(axes[2], runs, colors, labels, "delta_norm", "first", "Backpropagated signal ‖δ‖ at initialisation")
    if len(runs) <= MAX_LEGEND:
        handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label)
                   for c, label in zip(colors, labels, strict=True)]
        # One column holds about 25 names at this height; more runs get more columns, not a cut-off list.
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", ncol=math.ceil(len(runs) / 25))
    else:  # a legend of hundreds of names would leave no room for the panels
        fig.suptitle(f"{len(runs)} runs, coloured from dark to light in the order found "
                     "(too many to name here)", fontsize="small")
    _save(fig, path)
    return path


def layer_heatmap(run: Run, path: str | Path) -> Path:
    """log10 ‖∂L/∂W‖ as an image: one row per measured epoch, one column per layer."""
    import numpy as np

    path = _prepare(path)
    epochs = layers_by_epoch(run.layers)
    names = [r["layer"] for r in next(iter(epochs.values()), [])]
    grid = np.full((len(epochs), len(names)), np.nan)
    for i, rows in enumerate(epochs.values()):
        for j, r in enumerate(rows[:len(names)]):
            if _positive(r.get("grad_norm")):
                grid[i, j] = math.log10(r["grad_norm"])
    fig = _figure(figsize=(max(6.0, 0.35 * len(names) + 3), max(3.0, 0.3 * len(epochs) + 2)))
    ax = fig.subplots()
    if grid.size and np.isfinite(grid).any():
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(image, ax=ax, label="log10 ‖∂L/∂W‖")
        ax.set_yticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0, fontsize="small")
    else:
        ax.text(0.5, 0.5, "no layer measurements recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=f"{run.name}: gradient norm per layer", xlabel="layer", ylabel="epoch")
    _save(fig, path)
    return path
