"""`gradexp compare`: one row per run folder, sorted and formatted. No TensorFlow, no matplotlib.

A row is built from what the folder holds (config.yaml, run.json, history.csv, metrics.json); any
file or value that is missing gives `None`, never an error, so half-finished and interrupted runs
still line up next to completed ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from . import catalog, runs
from .errors import GradexpError, did_you_mean
from .runs import Run, clean

COLUMNS = ("run", "name", "started", "initializer", "activation", "depth", "widths", "batch_norm", "optimizer",
           "learning_rate", "batch_size", "precision", "seed", "epochs", "status", "verdict", "best_val_accuracy",
           "final_val_accuracy", "test_accuracy", "seconds_per_epoch")
# The compare table's short headers; --sort takes them as well as the column names.
HEADERS = {"initializer": "init", "batch_norm": "batch norm", "learning_rate": "lr", "batch_size": "batch",
           "best_val_accuracy": "best val", "final_val_accuracy": "final val", "test_accuracy": "test",
           "seconds_per_epoch": "s/epoch"}
SORT_ALIASES = {header: name for name, header in HEADERS.items()}
FORMATS = ("csv", "json", "markdown")
ACCURACY_COLUMNS = ("best_val_accuracy", "final_val_accuracy", "test_accuracy")
NUMERIC_COLUMNS = ("depth", "learning_rate", "batch_size", "seed", *ACCURACY_COLUMNS, "seconds_per_epoch")


# ---------------------------------------------------------------- rows


def rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run, keys in COLUMNS order. Run folders of the same name from different places
    (two copies of runs/, two sweeps) are told apart by as many of their parent folders as it takes:
    `parent/run`, or `copy/runs/run` when the parents share a name too."""
    out = [row(r) for r in runs]
    for r, label in zip(out, run_labels(runs), strict=True):
        r["run"] = label
    return out


def run_labels(runs: list[Run]) -> list[str]:
    """Each run's folder name; runs whose folders share a name get as many parent folders as it takes."""
    labels = [r.name for r in runs]
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    for members in groups.values():
        if len(members) > 1:
            for i, label in zip(members, distinct_labels([runs[i].path for i in members]), strict=True):
                labels[i] = label
    return labels


def distinct_labels(paths: list[Path]) -> list[str]:
    """The shortest trailing parts of each path (two at least) that tell all of them apart."""
    parts = [p.resolve().parts for p in paths]
    for k in range(2, max(len(p) for p in parts) + 1):
        labels = [Path(*p[-k:]).as_posix() for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def row(run: Run) -> dict[str, Any]:
    cfg, info, metrics = run.config, run.run, figures(run)
    model = _section(cfg, "model")
    optimizer = _section(cfg, "optimizer")
    training = _section(cfg, "training")
    diagnosis = metrics.get("diagnosis") if isinstance(metrics.get("diagnosis"), dict) else {}
    return {
        "run": run.name,
        "name": cfg.get("name") or info.get("name") or run.name,
        "started": started(info.get("started_at")),
        "initializer": spec_text(model.get("initializer"), catalog.INITIALIZER_BY_NAME),
        "activation": spec_text(model.get("activation"), catalog.ACTIVATION_BY_NAME),
        "depth": _depth(model),
        "widths": widths_text(model.get("width"), _depth(model)),
        "batch_norm": model.get("batch_norm"),
        "optimizer": optimizer_text(optimizer),
        "learning_rate": _finite(optimizer.get("learning_rate")),
        "batch_size": _integer(training.get("batch_size")),
        "precision": training.get("precision") if isinstance(training.get("precision"), str) else None,
        "seed": _integer(cfg.get("seed")),
        "epochs": _epochs(run, metrics),
        "status": info.get("status"),
        "verdict": diagnosis.get("verdict") or None,
        "best_val_accuracy": _finite(metrics.get("best_val_accuracy")),
        "final_val_accuracy": _finite(metrics.get("final_val_accuracy")),
        "test_accuracy": _finite(metrics.get("test_accuracy")),
        "seconds_per_epoch": _finite(metrics.get("seconds_per_epoch")),
    }


def figures(run: Run) -> dict[str, Any]:
    """The run's metrics.json; for a run that has none yet (still training, or killed), the figures
    history.csv gives, by the rule `train` writes them with."""
    if run.metrics:
        return run.metrics
    return runs.history_summary(run.history, run.run.get("status") == "diverged")


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    value = cfg.get(key)
    return value if isinstance(value, dict) else {}


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _finite(value: Any) -> Any:
    """Numbers stay numbers; NaN, infinities and non-numbers become None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def started(value: Any) -> str | None:
    """'YYYY-MM-DD HH:MM' from run.json's ISO timestamp (shown in the run's own local time)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return None


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def spec_text(spec: Any, table: dict[str, Any]) -> str | None:
    """'leaky_relu(negative_slope=0.2)': the name plus the parameters that differ from the catalog's
    defaults (all of them for a name the catalog does not know)."""
    if isinstance(spec, str):
        return spec
    if not isinstance(spec, dict) or not spec.get("name"):
        return None
    name = str(spec["name"])
    entry = table.get(name)
    defaults = {p.name: p.default for p in entry.params} if entry is not None else {}
    params = [f"{k}={_short(v)}" for k, v in spec.items()
              if k != "name" and (k not in defaults or v != defaults[k])]
    return f"{name}({', '.join(params)})" if params else name


def optimizer_text(optimizer: dict[str, Any]) -> str | None:
    """'momentum', 'sgd(clipnorm=1)': the name plus keys (other than the learning rate) that differ from
    the catalog's defaults for that optimizer."""
    name = optimizer.get("name")
    if not name:
        return None
    params = []
    for key, value in optimizer.items():
        if key in ("name", "learning_rate"):
            continue
        default = None if key in catalog.CLIP_KEYS else _optimizer_default(str(name), key)
        if value != default:
            params.append(f"{key}={_short(value)}")
    return f"{name}({', '.join(params)})" if params else str(name)


def _optimizer_default(name: str, key: str) -> Any:
    try:
        return catalog.optimizer_default(name, key)
    except KeyError:
        return object()  # unknown key: always shown


def _depth(model: dict[str, Any]) -> int | None:
    depth = model.get("depth")
    if isinstance(depth, int) and not isinstance(depth, bool):
        return depth
    width = model.get("width")
    return len(width) if isinstance(width, list) else None


def widths_text(width: Any, depth: int | None) -> str | None:
    """'300-100'; '100x20' for twenty equal layers (any equal run deeper than two)."""
    if isinstance(width, int) and not isinstance(width, bool):
        width = [width] * (depth or 1)
    if not isinstance(width, list) or not width:
        return None
    if len(width) > 2 and len(set(width)) == 1:
        return f"{width[0]}x{len(width)}"
    return "-".join(str(w) for w in width)


def _epochs(run: Run, figures: dict[str, Any]) -> str | None:
    completed = figures.get("epochs_completed")
    if not isinstance(completed, int):
        completed = run.run.get("epochs_completed")
    if not isinstance(completed, int):
        completed = len(run.history)
    configured = _section(run.config, "training").get("epochs")
    return f"{completed}/{configured if configured is not None else '?'}"


# ---------------------------------------------------------------- sorting


def _natural(text: str) -> list[Any]:
    """'9/10' before '10/10', 'run-2' before 'run-10'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", text) if part]


def _sort_value(value: Any) -> tuple[Any, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, _natural(str(value)))


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def sort_rows(rows: list[dict[str, Any]], key: str | None) -> list[dict[str, Any]]:
    """Rows sorted by column `key` ('-key' for descending); missing values last either way. Stable."""
    if key is None:
        return list(rows)
    descending = key.startswith("-")
    column = key[1:] if descending else key
    column = SORT_ALIASES.get(column, column)
    if column not in COLUMNS:
        choices = [("-" if descending else "") + c for c in COLUMNS]
        raise GradexpError(f"--sort: unknown column '{key}'{did_you_mean(key, choices)} "
                           f"(valid: {', '.join(COLUMNS)}; prefix with - for descending)")
    present = [r for r in rows if not _missing(r.get(column))]
    absent = [r for r in rows if _missing(r.get(column))]
    return sorted(present, key=lambda r: _sort_value(r[column]), reverse=descending) + absent


# ---------------------------------------------------------------- formatting


def cell(column: str, value: Any) -> str:
    """A value as people read it: accuracies to 4 decimals, seconds to 2, the learning rate as given."""
    if _missing(value):
        return "-"
    if isinstance(value, float):
        if column in ACCURACY_COLUMNS:
            return f"{value:.4f}"
        if column == "seconds_per_epoch":
            return f"{value:.2f}"
        return repr(value)
    return str(value)


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """Text for `--format csv|json|markdown`, ending with a newline. csv and json keep raw values."""
    if fmt == "csv":
        return _csv(rows)
    if fmt == "json":
        return json.dumps(clean([{c: r.get(c) for c in COLUMNS} for r in rows]), indent=2, allow_nan=False, default=str) + "\n"
    if fmt == "markdown":
        return _markdown(rows)
    raise GradexpError(f"--format: unknown format '{fmt}'{did_you_mean(fmt, FORMATS)} (valid: {', '.join(FORMATS)})")


def _csv_value(value: Any) -> Any:
    if _missing(value):
        return ""
    return repr(value) if isinstance(value, float) else value


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([_csv_value(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| " + " | ".join("---:" if c in NUMERIC_COLUMNS else "---" for c in COLUMNS) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_md_escape(cell(c, r.get(c))) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
