"""One training run from a validated Config to a finished run folder.

Order matters for the promise "bad input costs one line and leaves nothing behind": data is found,
verified and loaded and the model is built *before* the run folder exists. From then on every
outcome — completed, diverged, interrupted, failed — is written to `run.json`, and the epochs done
so far are on disk after each epoch.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

from . import __version__, diagnosis, runs
from .config import NAME_PATTERN, NAME_RULE, Config, estimate_size
from .errors import ConfigError, RunFailed, RunsError, os_error_line, short_path, shown

EXIT_CODES = {"completed": 0, "diverged": 3, "interrupted": 130, "failed": 1}


class Reporter(Protocol):
    """What the CLI draws; the library only calls these."""

    def started(self, run_dir: Path, info: dict[str, Any]) -> None: ...
    def progress(self, p: Any) -> None: ...
    def epoch(self, result: Any) -> None: ...
    def finished(self, status: str) -> None: ...


class _Silent:
    def started(self, run_dir: Path, info: dict[str, Any]) -> None:
        pass

    def progress(self, p: Any) -> None:
        pass

    def epoch(self, result: Any) -> None:
        pass

    def finished(self, status: str) -> None:
        pass


@dataclass
class Outcome:
    run_dir: Path
    status: str
    metrics: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the engine reads between compiled chunks; `on_first` is told, so
    that the user sees the first Ctrl-C was heard. A second signal raises KeyboardInterrupt, unless the
    outcome is `settled` (only run.json is left to write: a signal can no longer change it)."""

    def __init__(self, on_first: Any = None) -> None:
        self.signal: int | None = None
        self.on_first = on_first
        self.settled = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: Ctrl-C then arrives as KeyboardInterrupt
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.settled:
            return
        if self.signal is not None:  # a second signal: stop now, not at the next chunk
            raise KeyboardInterrupt
        self.signal = signum
        if self.on_first is not None:
            self.on_first()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __call__(self) -> bool:
        return self.signal is not None


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"gradexp": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def prepare(cfg: Config, device: str = "auto") -> tuple[Any, Any, str]:
    """Load data and build the model: everything that can fail on bad input, before any folder exists."""
    from . import data as data_mod

    dataset = data_mod.load(cfg.data.validation_size, cfg.data.scaling, cfg.data.dir, cfg.data.limit)
    from . import engine, model  # TensorFlow from here on

    device_name = engine.select_device(device)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    try:
        built = model.build(cfg)
    except ValueError as exc:  # Keras refusing a parameter combination the config let through
        raise ConfigError(f"model: Keras cannot build this configuration: {exc}; check model.* values") from None
    except (MemoryError, tf.errors.ResourceExhaustedError):  # past a raised training.memory_limit_gb
        raise ConfigError("model: this machine ran out of memory building the network; lower model.width or "
                          "model.depth (training.memory_limit_gb allowed more than is free)") from None
    return dataset, built, device_name


def check_runs_dir(runs_dir: str | Path) -> Path:
    """The runs folder, refused early when no run folder could be made in it: an empty path, a
    file, a folder below a file, an unwritable folder, or a place inside another run's folder
    (a run folder holds one run's files; nesting a run there would change that run)."""
    if not str(runs_dir).strip():
        raise RunsError("--runs-dir is empty; give a folder, e.g. --runs-dir runs")
    root = Path(runs_dir).expanduser()  # a quoted '~/runs' means the home folder, as data.dir does
    absolute = root.absolute()
    for folder in (absolute, *absolute.parents):
        if folder.is_symlink() and not folder.exists():
            where = f"--runs-dir {root}" + ("" if folder == absolute else f": {folder}")
            raise RunsError(f"{where} is a broken symbolic link (to {short_path(os.readlink(folder))}); fix the "
                            "link or choose another folder")
        if folder.exists():
            if not folder.is_dir():
                where = f"--runs-dir {root}" + ("" if folder == absolute else f": {folder}")
                raise RunsError(f"{where} is a file, not a folder; choose a folder, e.g. --runs-dir runs")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RunsError(f"--runs-dir {root}: {folder} is not writable; fix its permissions or "
                                "choose another folder")
            break
    for folder in (absolute, *absolute.parents):
        if runs.is_run_dir(folder):
            raise RunsError(f"--runs-dir {root} is inside the run folder {folder}; put new runs beside it, "
                            f"e.g. --runs-dir {folder.parent}")
    return root


def train(cfg: Config, runs_dir: str | Path = "runs", name: str | None = None, device: str = "auto",
          argv: list[str] | None = None, reporter: Reporter | None = None) -> Outcome:
    reporter = reporter or _Silent()
    if name is not None:  # --name is the run's name everywhere: folder, run.json and config.yaml
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"--name {shown(name)}: use {NAME_RULE}")
        cfg = cfg.model_copy(update={"name": name})
    runs_dir = check_runs_dir(runs_dir)  # before data and TensorFlow load: a bad folder costs a second, not ten
    dataset, built, device_name = prepare(cfg, device)
    from .engine import Engine

    eng = Engine(cfg, built, dataset)
    run_name = cfg.name or "run"
    params, mem = estimate_size(cfg)
    run_info: dict[str, Any] = {  # all but the start time before the folder exists: nothing slow after it
        "status": "running", "name": run_name, "started_at": None,
        "ended_at": None, "duration_seconds": None,
        "command": argv if argv is not None else sys.argv, "cwd": os.getcwd(), "pid": os.getpid(),
        "versions": versions(), "device": device_name, "device_requested": device,
        "xla_flags": eng.xla_flags, "seed": cfg.seed,
        "precision": cfg.training.precision, "parameters": built.model.count_params(),
        "data": dataset.source.describe(), "train_samples": len(dataset.x_train),
    }
    history: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    run_dir = runs.create_run_dir(runs_dir, run_name)
    started = datetime.now().astimezone()
    run_info["started_at"] = started.isoformat(timespec="seconds")
    try:
        runs.write_yaml(run_dir / "config.yaml", cfg.resolved())
        runs.write_json(run_dir / "run.json", run_info)
        _write_progress(run_dir, history, layers)  # headers at once: every run folder has both files
    except BaseException:  # a full disk, or Ctrl-C this early: leave no half-made run folder behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    outcome = _EpochsOutcome()
    t_start = time.perf_counter()
    with _StopFlag(getattr(reporter, "stopping", None)) as stop:  # until run.json says how the run ended
        try:
            try:
                reporter.started(run_dir, {**run_info, "estimated_memory_bytes": mem, "estimated_parameters": params})
                if cfg.telemetry.enabled:
                    zero = eng.epoch_zero()
                    layers.extend(zero.layers)
                    _write_progress(run_dir, history, layers)
                _run_epochs(cfg, eng, run_dir, history, layers, reporter, stop, outcome)
                metrics = _metrics(cfg, eng, history, layers, outcome.divergence, dataset)
                runs.write_json(run_dir / "metrics.json", metrics)
                _save_model(built.model, eng, run_dir)
                if stop() and outcome.status == "completed":  # heard in the last chunk, the test pass or the save:
                    outcome.status = "interrupted"  # what a first signal does anyway, so it is not ignored
            except KeyboardInterrupt:  # a second Ctrl-C: stop at once, keep the epochs done, skip the test pass
                outcome.status = "interrupted"
                metrics = _metrics(cfg, eng, history, layers, outcome.divergence, dataset, evaluate_test=False)
                runs.write_json(run_dir / "metrics.json", metrics)  # a disk error here fails the run, below
            finally:
                stop.settled = True  # the outcome is known: only run.json is left to write
        except BaseException as exc:
            run_info.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            try:
                _finish(run_dir, run_info, started, t_start)
                recorded = True
            except OSError:  # the full disk that failed the run may refuse run.json too
                recorded = False
            reporter.finished("failed")
            _raise_as_failed_run(exc, f"the run stopped and is recorded as failed in {run_dir}" if recorded else
                                 f"the run stopped, and {run_dir}/run.json could not be updated either "
                                 "(it still says running)")
        if outcome.divergence:
            run_info["divergence"] = outcome.divergence
        if outcome.status == "interrupted":
            run_info["epochs_completed"] = len(history)
        run_info["status"] = outcome.status
        try:
            _finish(run_dir, run_info, started, t_start)
        except OSError as exc:
            _raise_as_failed_run(exc, "the run finished but its run.json still says running")
        reporter.finished(outcome.status)
    return Outcome(run_dir, outcome.status, metrics)


@dataclass
class _EpochsOutcome:
    """How the epochs ended, filled in as they run: a second Ctrl-C that cuts them short still finds a
    divergence already located."""

    status: str = "completed"
    divergence: dict[str, Any] | None = None


def _run_epochs(cfg: Config, eng: Any, run_dir: Path, history: list[dict[str, Any]], layers: list[dict[str, Any]],
                reporter: Reporter, stop: _StopFlag, outcome: _EpochsOutcome) -> None:
    """The epochs, each written to disk as it ends. Appends to history and layers, fills in outcome."""
    for epoch in range(1, cfg.training.epochs + 1):
        if stop():
            outcome.status = "interrupted"
            return
        result = eng.train_epoch(epoch, reporter.progress, stop)
        if result is None:  # stopped mid-epoch: the partial epoch is dropped
            outcome.status = "interrupted"
            return
        div = eng.divergence(epoch)
        history.append(result.history_row())
        if div is not None:
            outcome.divergence, outcome.status = div.__dict__, "diverged"
        else:
            layers.extend(result.layers)
        _write_progress(run_dir, history, layers)
        reporter.epoch(result)
        if outcome.status == "diverged":
            return
        if stop() and epoch < cfg.training.epochs:
            outcome.status = "interrupted"
            return


def _raise_as_failed_run(exc: BaseException, what: str) -> NoReturn:
    """Raise a started run's error again: one RunFailed line (exit 1) when it is about the run's folder
    or disk (a full disk), unlike the bad input the same error means before training (exit 2); any
    other error as it is."""
    line = os_error_line(exc) if isinstance(exc, OSError) else None
    if line is None:
        raise exc
    raise RunFailed(f"{line}; {what}") from None


def _finish(run_dir: Path, info: dict[str, Any], started: datetime, t_start: float) -> None:
    info["ended_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    info["duration_seconds"] = round(time.perf_counter() - t_start, 3)
    runs.write_json(run_dir / "run.json", info)


def _write_progress(run_dir: Path, history: list[dict[str, Any]], layers: list[dict[str, Any]]) -> None:
    runs.write_csv(run_dir / "history.csv", runs.HISTORY_COLUMNS, history)
    runs.write_csv(run_dir / "layers.csv", runs.LAYER_COLUMNS, layers)


def _metrics(cfg: Config, eng: Any, history: list[dict[str, Any]], layers: list[dict[str, Any]],
             divergence: dict[str, Any] | None, dataset: Any, evaluate_test: bool = True) -> dict[str, Any]:
    test_loss = test_acc = math.nan
    if evaluate_test:
        test_loss, test_acc = eng.evaluate(dataset.x_test, dataset.y_test)
        if not math.isfinite(test_loss):  # NaN outputs: argmax picks class 0, a tenth of the test set
            test_acc = math.nan
    figures = runs.history_summary(history, divergence is not None)
    per_epoch = figures["seconds_per_epoch"]
    diag = diagnosis.diagnose(layers, diagnosis.thresholds_of(cfg.telemetry), divergence, cfg.telemetry.enabled,
                              diagnosis.setup_of(cfg))
    if not history and diag["verdict"] not in (None, "diverged"):
        diag["summary"] += " Measured at initialisation only: the run stopped before its first epoch finished."
    return {
        "test_loss": test_loss, "test_accuracy": test_acc, **figures,
        "samples_per_second": len(dataset.x_train) / per_epoch if per_epoch and math.isfinite(per_epoch) else math.nan,
        "diagnosis": diag,
    }


def _save_model(model: Any, eng: Any, run_dir: Path) -> None:
    """model.keras via a temporary file and a rename; compiled with the run's optimizer so that
    `keras.models.load_model` gives a model ready to evaluate or fine-tune."""
    model.compile(optimizer=eng.opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    tmp = run_dir / f".model.tmp-{os.getpid()}.keras"
    try:
        with runs.naming(run_dir / "model.keras", instead_of_temporary=True):
            model.save(tmp)
            os.replace(tmp, run_dir / "model.keras")
    finally:
        tmp.unlink(missing_ok=True)
