"""Run folders: create them without collisions, write every file atomically, read them back.

The folder is the interface between training and everything after it (`show`, `compare`, plots),
so reading never needs TensorFlow, and a damaged folder is reported, not crashed on.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .errors import RunsError

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
LAYER_COLUMNS = ("epoch", "layer", "grad_norm", "grad_norm_max", "weight_norm", "update_ratio", "act_mean",
                 "act_std", "dead_fraction", "saturated_fraction", "delta_norm")
TEXT_COLUMNS = ("layer",)  # every other column of the two CSV files holds numbers (or nothing)
STATUSES = ("running", "completed", "diverged", "interrupted", "failed")
MAX_SUFFIX = 10_000
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def naming(path: Path, instead_of_temporary: bool = False) -> Iterator[None]:
    """An OSError without a file name gets `path`'s: a full disk fails in write() or fsync(), which name
    none, and the error line should say which file could not be written. With `instead_of_temporary`,
    `path` replaces the name the error has: that of the temporary file written in its place."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or instead_of_temporary:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    with naming(path, instead_of_temporary=True):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with naming(path), os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run folders are meant to be shared
        with naming(path, instead_of_temporary=True):
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


def layers_by_epoch(layers: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """layers.csv rows grouped by epoch, in epoch order; rows without an integer epoch are left out."""
    out: dict[int, list[dict[str, Any]]] = {}
    for row in layers:
        epoch = row.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            out.setdefault(epoch, []).append(row)
    return dict(sorted(out.items()))


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def history_summary(history: list[dict[str, Any]], diverged: bool) -> dict[str, Any]:
    """The figures of metrics.json that come from history.csv alone: one rule for `train`, which writes
    them, and for `compare`, which reads the history of a run that has no metrics.json yet.

    A diverged run's last row is the epoch it stopped in: recorded, but neither completed nor timed.
    The first epoch includes XLA compilation, so `seconds_per_epoch` is the mean of the epochs after
    it, and NaN while there are none: one epoch's time says little about the next ones."""
    vals = [(h["val_accuracy"], h["epoch"]) for h in history
            if _finite_number(h.get("val_accuracy")) and _finite_number(h.get("epoch"))]
    best_val, best_epoch = max(vals, key=lambda t: (t[0], -t[1])) if vals else (math.nan, None)
    completed = history[:-1] if diverged and history else history
    secs = [h["seconds"] for h in completed if _finite_number(h.get("seconds"))]
    steady = secs[1:]
    final_val = history[-1].get("val_accuracy") if history else None
    return {
        "best_val_accuracy": best_val, "best_epoch": best_epoch,
        "final_val_accuracy": final_val if _finite_number(final_val) else math.nan,
        "epochs_completed": len(completed),
        "seconds_per_epoch": sum(steady) / len(steady) if steady else math.nan,
        "first_epoch_seconds": secs[0] if secs else math.nan,
    }


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


def read_csv(path: Path, columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Rows keyed by the header. A row with fewer or more fields than the header (a cut-off last line of
    a half-copied file) raises ValueError naming its line: the file, and so the run, is damaged. With
    `columns`, so do a header that lacks one of them and text where a number belongs."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = [c for c in columns or () if c not in header]
        if missing:
            raise ValueError(f"its header lacks {', '.join(missing)} (expected {','.join(columns or ())})")
        numeric = [c for c in columns or () if c not in TEXT_COLUMNS]  # in order: the first bad one is named
        rows = []
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                raise ValueError(f"line {reader.line_num} has {len(fields)} fields, expected {len(header)}")
            row = {k: _number(v) for k, v in zip(header, fields, strict=True)}
            bad = next((c for c in numeric if isinstance(row[c], str)), None)
            if bad is not None:
                raise ValueError(f"line {reader.line_num}: {bad} is {row[bad]!r}, not a number")
            rows.append(row)
        return rows


# metrics.json keys (dotted into the diagnosis) and the shape each must have; null is always allowed.
METRICS_SHAPE = {
    **dict.fromkeys(("test_loss", "test_accuracy", "best_val_accuracy", "final_val_accuracy", "seconds_per_epoch",
                     "first_epoch_seconds", "samples_per_second"), "a number"),
    "best_epoch": "an integer", "epochs_completed": "an integer",
    "diagnosis": "a mapping", "diagnosis.verdict": "text", "diagnosis.summary": "text",
    "diagnosis.evidence": "a mapping",
    **{f"diagnosis.evidence.{k}": "a number" for k in (
        "gradient_ratio", "kernel_grad_ratio", "first_delta_norm", "output_delta_norm", "first_grad_norm",
        "worst_dead_fraction", "worst_saturated_fraction", "act_std_first", "act_std_last")},
    **{f"diagnosis.evidence.{k}": "text" for k in ("first_layer", "worst_dead_layer", "worst_saturated_layer",
                                                   "note")},
    "diagnosis.evidence.epoch": "an integer",
    "diagnosis.evidence.verdict_by_epoch": "a mapping of text",
    "diagnosis.evidence.gradient_ratio_by_epoch": "a mapping of numbers",
    "diagnosis.evidence.thresholds": "a mapping of numbers",
    "diagnosis.evidence.divergence": "a mapping",
}


def _is_number(value: Any) -> bool:
    """An int or float that a float can hold (JSON allows integers of any size; 10**400 is damage)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


_SHAPE_CHECKS = {
    "a number": _is_number,
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "text": lambda v: isinstance(v, str),
    "a mapping": lambda v: isinstance(v, dict),
    "a mapping of text": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "a mapping of numbers": lambda v: isinstance(v, dict) and all(x is None or _is_number(x) for x in v.values()),
}


def check_metrics(metrics: Any) -> dict[str, Any]:
    """metrics.json's content when its known keys have the shapes `show` and `compare` rely on;
    raises ValueError naming the first key that does not. Unknown keys are kept as they are."""
    if not isinstance(metrics, dict):
        raise ValueError(f"holds {_brief(metrics)}, expected a mapping")
    for key, shape in METRICS_SHAPE.items():  # parents come before their children
        *parents, last = key.split(".")
        parent: Any = metrics
        for part in parents:
            parent = parent.get(part)
            if parent is None:
                break
        value = parent.get(last) if isinstance(parent, dict) else None
        if value is not None and not _SHAPE_CHECKS[shape](value):
            raise ValueError(f"{key} is {_brief(value)}, expected {shape}")
    return metrics


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


MAX_RUN_FILE_BYTES = 2**30  # layers.csv of 10,000 layers over 100 epochs is ~150 MB; 700 epochs pass it


def read_run(path: str | Path) -> Run:
    """A run folder's files. Raises RunsError naming what is wrong with the folder."""
    path = Path(path)
    if not path.is_dir():
        raise RunsError(f"{path}: not a folder")
    if not is_run_dir(path):  # a run.json that is there but no regular file is damage (_read_result)
        raise RunsError(f"{path}: not a run folder (no run.json)")
    out = Run(path, _read_result(path, "run.json", _read_run_info), _read_result(path, "config.yaml", _read_config))
    # Each is optional (a run that stopped early lacks some); one that is there but not a readable file
    # (a folder of that name) is damage, not absence.
    if (path / "history.csv").exists():
        out.history = _read_result(path, "history.csv", functools.partial(read_csv, columns=HISTORY_COLUMNS))
    if (path / "layers.csv").exists():
        out.layers = _read_result(path, "layers.csv", functools.partial(read_csv, columns=LAYER_COLUMNS))
    if (path / "metrics.json").exists():
        out.metrics = _read_result(path, "metrics.json", _read_metrics)
    return out


def _read_run_info(file: Path) -> dict[str, Any]:
    run = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(run, dict) or run.get("status") not in STATUSES:
        raise ValueError("no valid status")
    return run


def _read_config(file: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:  # its text runs over several lines; the kind is enough here
        raise ValueError(f"not valid YAML ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise ValueError(f"holds {_brief(config)}, expected a mapping")
    return config


def _read_metrics(file: Path) -> dict[str, Any]:
    return check_metrics(json.loads(file.read_text(encoding="utf-8")))


def _read_result(folder: Path, name: str, reader: Callable[[Path], Any]) -> Any:
    """`reader(folder / name)`, turning any damage into a RunsError that names the file and the problem.
    Only a regular file of a size gradexp could have written is read: a FIFO would block, a device
    (/dev/zero) never end."""
    try:
        info = (folder / name).stat()
        if not stat.S_ISREG(info.st_mode):
            raise RunsError(f"{folder}: {name} is not a regular file")
        if info.st_size > MAX_RUN_FILE_BYTES:
            raise RunsError(f"{folder}: {name} is {info.st_size / 2**30:.1f} GiB, over the 1 GiB gradexp reads "
                            "of a run file")
        return reader(folder / name)
    except OSError as exc:
        raise RunsError(f"{folder}: {name} is unreadable ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise RunsError(f"{folder}: {name} is unreadable ({exc})") from None
    except RecursionError:  # JSON nested thousands deep: no file gradexp writes
        raise RunsError(f"{folder}: {name} is unreadable (nested too deeply)") from None
    except ValueError as exc:  # readable, but the content is damaged (a cut-off row, a wrong shape)
        raise RunsError(f"{folder}: {name}: {exc}") from None


def is_run_dir(path: Path) -> bool:
    """Holds a run.json, whatever it is: one that is no regular file makes a damaged run, not no run."""
    return os.path.lexists(path / "run.json")


def collect(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Runs from run folders and parent folders (`runs/`, `runs/*`, a sweep folder), in the order
    given; returns the runs and one warning per path skipped."""
    runs: list[Run] = []
    warnings: list[str] = []
    seen: set[Path] = set()

    def visit(path: Path, depth: int) -> None:
        try:
            resolved = path.resolve()
            exists = path.exists()
        except (OSError, RuntimeError) as exc:  # a name too long, a symbolic-link loop
            warnings.append(f"{path}: cannot be looked at ({getattr(exc, 'strerror', None) or exc}), skipped")
            return
        if resolved in seen:
            return
        seen.add(resolved)
        if not exists:
            warnings.append(f"{path}: no such file or folder, skipped")
            return
        if not path.is_dir():
            if depth == 0:  # e.g. a plot matched by `runs/*`; inside a parent folder files are ignored
                warnings.append(f"{path}: a file, not a run folder, skipped")
            return
        try:
            if is_run_dir(path):
                runs.append(read_run(path))
                return
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except RunsError as exc:
            warnings.append(f"{exc}, skipped")
            return
        except OSError as exc:
            warnings.append(f"{path}: cannot be read ({exc.strerror or exc}), skipped")
            return
        if depth < 2 and children and any(may_hold_runs(c) for c in children):
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


def may_hold_runs(folder: Path) -> bool:
    """A run folder, or a folder of them; one that cannot be looked into may be either (visiting it
    then warns that it cannot be read, rather than the whole command failing)."""
    try:
        return is_run_dir(folder) or any(is_run_dir(g) for g in _subdirs(folder))
    except OSError:
        return True


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []
