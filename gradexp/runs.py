"""Run folders: create them without collisions, write every file atomically, read them back.

The folder is the interface between training and everything after it (`show`, `compare`, plots),
so reading never needs TensorFlow, and a damaged folder is reported, not crashed on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .errors import RunsError

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
STATUSES = ("running", "completed", "diverged", "interrupted", "failed")
MAX_SUFFIX = 10_000
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------- writing


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (a strict JSON reader rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return clean(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(clean(data), indent=2, allow_nan=False) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(clean(data), sort_keys=False))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def create_run_dir(runs_dir: str | Path, name: str, now: datetime | None = None) -> Path:
    """`RUNS_DIR/<timestamp>_<name>`, with `-2`, `-3`… when taken. `mkdir` is atomic, so two
    processes starting together never share a folder."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunsError(f"cannot create the runs directory {root}: {exc.strerror}; "
                        "choose a writable one with --runs-dir") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunsError(f"the runs directory {root} is not writable; fix its permissions or choose another with --runs-dir")
    stamp = (now or datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    base = f"{stamp}_{name}"
    for n in range(1, MAX_SUFFIX):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunsError(f"cannot create a run folder in {root}: {exc.strerror}; "
                            "choose a writable one with --runs-dir") from None
    raise RunsError(f"{root} already holds {MAX_SUFFIX} runs named {base}; use --name")


# ---------------------------------------------------------------- reading


@dataclass
class Run:
    path: Path
    run: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_run(path: str | Path) -> Run:
    """A run folder's files. Raises RunsError naming what is wrong with the folder."""
    path = Path(path)
    if not path.is_dir():
        raise RunsError(f"{path}: not a folder")
    run_file = path / "run.json"
    if not run_file.is_file():
        raise RunsError(f"{path}: not a run folder (no run.json)")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
        if not isinstance(run, dict) or run.get("status") not in STATUSES:
            raise ValueError("no valid status")
    except (OSError, ValueError) as exc:
        raise RunsError(f"{path}: run.json is unreadable ({exc})") from None
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunsError(f"{path}: config.yaml is unreadable ({type(exc).__name__})") from None
    out = Run(path, run, config)
    try:
        if (path / "history.csv").is_file():
            out.history = read_csv(path / "history.csv")
        if (path / "layers.csv").is_file():
            out.layers = read_csv(path / "layers.csv")
        if (path / "metrics.json").is_file():
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            out.metrics = metrics if isinstance(metrics, dict) else {}
    except (OSError, ValueError, csv.Error) as exc:
        raise RunsError(f"{path}: a result file is unreadable ({exc})") from None
    return out


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file()


def collect(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Runs from run folders and parent folders (`runs/`, `runs/*`, a sweep folder), in the order
    given; returns the runs and one warning per path skipped."""
    runs: list[Run] = []
    warnings: list[str] = []
    seen: set[Path] = set()

    def visit(path: Path, depth: int) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        if not path.exists():
            warnings.append(f"{path}: no such file or folder, skipped")
            return
        if not path.is_dir():
            if depth == 0:
                warnings.append(f"{path}: not a folder, skipped")
            return
        if is_run_dir(path):
            try:
                runs.append(read_run(path))
            except RunsError as exc:
                warnings.append(f"{exc}, skipped")
            return
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if depth < 2 and children and any(is_run_dir(c) or any(is_run_dir(g) for g in _subdirs(c)) for c in children):
            for child in children:
                visit(child, depth + 1)
            return
        if depth == 0 and not children:
            warnings.append(f"{path}: holds no run folders, skipped")
        else:
            warnings.append(f"{path}: not a run folder (no run.json), skipped")

    for p in paths:
        visit(Path(p), 0)
    return runs, warnings


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []
