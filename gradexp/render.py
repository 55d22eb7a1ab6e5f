"""Everything gradexp prints, drawn with rich.

On a terminal, training shows a live bar; elsewhere (CI logs, pipes, TERM=dumb) it prints one plain
line per epoch. NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .compare import cell
from .render_runs import FRACTIONS_CAPTION, VERDICT_STYLE, PipeConsole, _console, thin_layers
from .render_runs import num as fmt


def _err_console() -> Console:
    console = PipeConsole(stderr=True)
    return console if console.is_terminal or "COLUMNS" in os.environ else PipeConsole(stderr=True, width=1000)



def live() -> bool:
    return Console(stderr=True).is_terminal and os.environ.get("TERM") != "dumb"


def _reader_may_leave(method: Callable[..., None]) -> Callable[..., None]:
    """A reporter method that outlives its reader: when the pipe its stderr output goes to closes
    (`2>&1 | head`, a pager quit early), progress stops and the run goes on to write its folder, as
    under `nohup`. Only stderr is silenced: a summary on a still-open stdout is still printed."""

    @functools.wraps(method)
    def wrapped(self: TrainReporter, *args: Any) -> None:
        if self.gone:
            return
        try:
            method(self, *args)
        except BrokenPipeError:
            self.gone = True
            self.bar = None
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # also keeps Python's flush at exit from failing again
            os.close(null)

    return wrapped


class TrainReporter:
    """Progress for `gradexp train`: a rich bar on a terminal, a line per epoch otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: Any = None
        self.console = _err_console()
        self.gone = False  # the reader of the progress (stderr) has gone

    @_reader_may_leave
    def started(self, run_dir: Path, info: dict[str, Any]) -> None:
        data = info["data"]
        data_warnings(data)
        if self.quiet:
            return
        source = f"{data['folder']} ({data['found_by']}{', verified' if data['verified'] else ', not checksummed'})"
        self.console.print(f"[bold]Run[/] {escape(str(run_dir))}  device {escape(info['device'])}  "
                          f"{info['parameters']:,} parameters  {info['train_samples']:,} training images")
        self.console.print(f"Data: {source}", highlight=False, markup=False)
        if live():
            self.bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]} acc {task.fields[acc]}"),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.start()
            # '-' until the first chunk reports: while XLA compiles, nothing has been measured
            self.task = self.bar.add_task("train", total=1, epoch="-", loss="-", acc="-")

    @_reader_may_leave
    def progress(self, p: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=p.step, total=p.steps, epoch=f"{p.epoch}/{p.epochs}",
                            loss=f"{p.loss:.4f}", acc=f"{p.accuracy:.4f}")

    @_reader_may_leave
    def stopping(self) -> None:
        """The first Ctrl-C or SIGTERM was heard (a line even under --quiet: it answers the user)."""
        (self.bar.console if self.bar is not None else self.console).print(
            "Stopping: the steps under way finish, then the run is saved as interrupted "
            "(a second Ctrl-C or SIGTERM stops at once).", highlight=False, markup=False)

    @_reader_may_leave
    def epoch(self, r: Any) -> None:
        if self.quiet:
            return
        line = (f"epoch {r.epoch:>3}  loss {r.loss:.4f}  acc {r.accuracy:.4f}  val_loss {r.val_loss:.4f}  "
                f"val_acc {r.val_accuracy:.4f}  {r.seconds:.2f}s")
        (self.bar.console if self.bar is not None else self.console).print(line, highlight=False)

    @_reader_may_leave
    def finished(self, status: str) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def verdict_text(diag: dict[str, Any]) -> str:
    v = diag.get("verdict") or "-"
    return f"[{VERDICT_STYLE.get(v, 'white')}]{v}[/]"


def _measured(x: Any, digits: int) -> str:
    """A figure of the summary, '-' when it was not measured (NaN: no finished epoch, no test pass)."""
    return "-" if isinstance(x, float) and math.isnan(x) else fmt(x, digits)


def _seconds_per_epoch(m: dict[str, Any]) -> str:
    """The steady rate; with only the first epoch timed, that epoch's time, marked as such."""
    steady, first = m.get("seconds_per_epoch"), m.get("first_epoch_seconds")
    if isinstance(steady, float) and math.isnan(steady) and isinstance(first, float) and math.isfinite(first):
        return f"- (one epoch timed: {fmt(first, 2)} s, XLA compilation included)"
    return _measured(steady, 3)


def train_summary(outcome: Any) -> None:
    m = outcome.metrics
    diag = m.get("diagnosis", {})
    best = (f"{cell('best_val_accuracy', m.get('best_val_accuracy'))} (epoch {m['best_epoch']})"
            if m.get("best_epoch") is not None else "-")
    rows = [("status", escape(outcome.status)), ("run folder", escape(str(outcome.run_dir))),
            ("test accuracy", cell("test_accuracy", m.get("test_accuracy"))),
            ("best val accuracy", best),
            ("seconds / epoch", _seconds_per_epoch(m)), ("diagnosis", verdict_text(diag))]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:  # plain lines, not a table: no padding after the value in logs
        _console().print(f"{label:<{width}}  {value}", highlight=False)
    if diag.get("summary"):
        _console().print(diag["summary"], highlight=False)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table()
    for i, c in enumerate(columns):  # the first column holds the names users copy into YAML: never broken
        table.add_column(c, overflow="fold", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    _console().print(f"[italic]{escape(title)}[/]")  # its own line: a table title is padded to the table's width
    _console().print(table)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed") or "-"


def initializer_table(rows: list[dict[str, Any]]) -> None:
    _table("Initializers (model.initializer, model.bias_initializer)",
           ["name", "class", "distribution", "scale", "parameters", "suits"],
           [[r["name"] + ("" if r["dense"] else " *"), r["class"], r["distribution"], r["scale"],
             _params(r["params"]), r["suits"]] for r in rows])
    _console().print("fan_in / fan_out: inputs / outputs of the layer; fan_avg = (fan_in + fan_out) / 2. "
                  "* exposed by Keras, but not usable for Dense layers.", highlight=False)


def activation_table(rows: list[dict[str, Any]]) -> None:
    _table("Activations (model.activation)", ["name", "f(z)", "parameters", "saturates", "suggested initializer", "notes"],
           [[r["name"], r["formula"], _params(r["params"]), r["saturation"], r["suggested_initializer"], r["notes"]]
            for r in rows])


def optimizer_table(rows: list[dict[str, Any]]) -> None:
    _table("Optimizers (optimizer.name)", ["name", "class", "keys (defaults)", "description"],
           [[r["name"], r["class"], _params(r["keys"]), r["description"]] for r in rows])
    _console().print("Every optimizer also takes learning_rate, clipnorm, clipvalue, global_clipnorm.", highlight=False)


def data_warnings(data: dict[str, Any]) -> None:
    """`Warning:` lines for the data sources that were passed over: folders the user named that lack
    the files, damaged files the lookup found by itself (`DataSource.describe()`'s `skipped`)."""
    for line in data.get("skipped", []):
        _err_console().print(f"Warning: {line}; used {data['found_by']} ({data['folder']}) instead",
                             highlight=False, markup=False)


def data_report(source: Any, checked: bool) -> None:
    data_warnings(source.describe())
    _console().print(f"Fashion-MNIST: {source.folder}  (found by {source.how})", highlight=False, markup=False)
    if checked:
        state = ("verified: SHA-256 of all four decompressed files matches" if source.verified else
                 f"readable IDX files, not the official set ({source.counts}), so not checksummed")
        _console().print(state, highlight=False, markup=False)
    else:
        _console().print("not read yet: `gradexp data --check` reads every file and verifies its SHA-256",
                         highlight=False, markup=False)


def probe_report(result: dict[str, Any]) -> None:
    data_warnings(result["data"])
    diag = result["diagnosis"]
    shown, note = thin_layers(result["layers"], diag, "`--json`")
    rows = [[r["layer"], fmt(r["act_mean"]), fmt(r["act_std"]), fmt(r.get("dead_fraction")),
             fmt(r.get("saturated_fraction")), fmt(r["grad_norm"]), fmt(r["delta_norm"])] for r in shown]
    batches = result.get("batches", 1)
    _table(f"Probe at initialisation: {batches} batch{'es' if batches != 1 else ''} of {result['batch_size']} "
           f"images, {result['device']}, {result['seconds']:.1f}s",
           ["layer", "act mean", "act std", "dead", "saturated", "‖∂L/∂W‖", "‖δ‖"], rows)
    caption = f"‖∂L/∂W‖ kernel gradient norm · ‖δ‖ backpropagated signal ∂L/∂z · {FRACTIONS_CAPTION}"
    for line in (caption, note):
        if line:
            _console().print(f"[italic]{escape(line)}[/]")
    _console().print(f"Verdict: {verdict_text(diag)}")
    _console().print(diag["summary"], highlight=False)


