"""What `gradexp compare` and `gradexp show` print, drawn with rich.

Tables go to stdout. Away from a terminal (a pipe, a file, CI) rich prints plain text without
colour, and the width is unbounded so that rows are never folded; on a narrow terminal long cells fold
onto a second line rather than being cut. Titles and captions are printed as lines of their own, so
piped output carries no padding. NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import yaml
from rich.console import Console
from rich.measure import Measurement
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from . import compare
from .runs import HISTORY_COLUMNS, Run, layers_by_epoch

PIPE_WIDTH = 1000  # off a terminal nothing folds; tables still take only the width they need
VERDICT_STYLE = {"healthy": "green", "vanishing": "yellow", "exploding": "red", "dead_units": "magenta",
                 "saturated": "yellow", "diverged": "bold red"}
STATUS_STYLE = {"completed": "green", "diverged": "bold red", "failed": "bold red", "interrupted": "yellow",
                "running": "cyan"}
# Left out one by one while the compare table is wider than the terminal: first the two that the run
# folder's name repeats (its timestamp and suffix), then, in this order, the columns with the same
# value in every run, then those that tell runs apart.
COMPARE_DROP_FIRST = ("started", "name")
FOLDABLE = ("run", "name", "initializer", "activation", "optimizer", "widths")  # long text; the rest never folds
COMPARE_DROP_ORDER = ("seed", "precision", "batch_size", "batch_norm", "depth", "final_val_accuracy",
                      "seconds_per_epoch", "epochs", "learning_rate", "optimizer", "widths")
LAYER_KEYS = ("layer", "grad_norm", "grad_norm_max", "delta_norm", "weight_norm", "update_ratio", "act_mean",
              "act_std", "dead_fraction", "saturated_fraction")
LAYER_HEADERS = dict(zip(LAYER_KEYS, ("layer", "‖∂L/∂W‖", "max ‖∂L/∂W‖", "‖δ‖", "‖W‖", "update", "act mean",
                                      "act std", "dead", "saturated"), strict=True))
FRACTIONS_CAPTION = ("dead = fraction of units that output zero for every sample of a batch · saturated = fraction of "
                     "pre-activation values (units × samples) in the activation's flat region")
LAYER_CAPTION = ("‖∂L/∂W‖ kernel gradient norm (mean, max over the epoch's steps) · ‖δ‖ backpropagated signal "
                 f"∂L/∂z · ‖W‖ kernel norm · update = ‖ΔW‖/‖W‖ · {FRACTIONS_CAPTION}")
# The layer table's columns left out, in this order, on a narrow terminal; ‖δ‖ and the fractions,
# which the verdict rests on, stay.
LAYER_DROP_ORDER = ("grad_norm_max", "weight_norm", "update_ratio", "act_mean", "grad_norm", "act_std")
MAX_ROWS = 40


class PipeConsole(Console):
    def on_broken_pipe(self) -> None:
        """`gradexp ... | head`: leave it to the CLI, which ends every closed pipe alike (quietly, 141);
        rich's own handling exits with 1, the code of an internal error."""
        raise BrokenPipeError


def _console() -> Console:
    console = PipeConsole()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = PipeConsole(width=PIPE_WIDTH)
    return console


def num(x: Any, digits: int = 3) -> str:
    """Compact: 3 significant digits, scientific below 1e-3 and from 1e4 on, '-' when missing."""
    if x is None or x == "":
        return "-"
    if not isinstance(x, float) or not math.isfinite(x):
        return str(x)  # ints, text, nan, inf
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e4:
        return f"{x:.{digits - 1}e}"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _styled(text: str, styles: dict[str, str]) -> Text:
    return Text(text, style=styles.get(text, ""))


def thin(items: list[Any], keep: int = MAX_ROWS, always: Callable[[Any], bool] = lambda item: False) -> list[Any]:
    """Long lists: the first entry, the last two, evenly spaced ones and those `always` names, so that a
    table stays readable and still shows what its text refers to."""
    if len(items) <= keep:
        return items
    step = math.ceil(len(items) / keep)
    picked = set(range(0, len(items), step)) | {len(items) - 1, len(items) - 2}
    picked |= {i for i, item in enumerate(items) if always(item)}
    return [items[i] for i in sorted(picked)]


def thin_layers(rows: list[dict[str, Any]], diagnosis: dict[str, Any],
                where_all: str) -> tuple[list[dict[str, Any]], str | None]:
    """A deep net's layer rows as a table shows them (`thin`, keeping every layer the diagnosis names),
    and the note under it when rows were left out."""
    named = named_layers(diagnosis)
    shown = thin(rows, always=lambda r: r.get("layer") in named)
    if len(shown) == len(rows):
        return shown, None
    return shown, (f"{len(shown)} of {len(rows)} layers shown: the first, the last two, evenly spaced ones and "
                   f"those the diagnosis names; {where_all} has all")


def named_layers(diagnosis: dict[str, Any]) -> set[str]:
    """The layers a diagnosis's evidence names (first layer, worst dead or saturated, first non-finite)."""
    evidence = _mapping(diagnosis.get("evidence"))
    names = {v for k, v in evidence.items() if k.endswith("_layer") and isinstance(v, str)}
    divergence = _mapping(evidence.get("divergence"))
    if isinstance(divergence.get("first_layer"), str):
        names.add(divergence["first_layer"])
    return names


# ---------------------------------------------------------------- compare


def _print_table(console: Console, table: Table, title: str | None = None, caption: str | None = None) -> None:
    if title:
        console.print(Text(title, style="bold"), soft_wrap=True)
    # Numbers never fold (0.0781 must not read as 0.078 over a stray 1): a table still too wide once
    # the columns it may leave out are gone is printed whole, and the terminal wraps its lines.
    # (console.print caps a `width` argument at the console's own, hence the console's width is set.)
    width, natural = console.width, _natural_width(console, table)
    console.width = max(width, natural)
    try:
        console.print(table)
    finally:
        console.width = width
    if caption:
        console.print(Text(caption, style="dim"), soft_wrap=True)


def _compare_grid(rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table()
    for column in columns:
        numeric = column in compare.NUMERIC_COLUMNS
        table.add_column(compare.HEADERS.get(column, column), overflow="fold", no_wrap=column not in FOLDABLE,
                         justify="right" if numeric else "left")
    styles = {"status": STATUS_STYLE, "verdict": VERDICT_STYLE}
    for r in rows:
        table.add_row(*(_styled(compare.cell(c, r.get(c)), styles.get(c, {})) for c in columns))
    return table


def _natural_width(console: Console, table: Table) -> int:
    """The width the table takes with no cell folded."""
    return Measurement.get(console, console.options.update_width(PIPE_WIDTH * 100), table).maximum


def _fitted(console: Console, build: Callable[[list[str]], Table], columns: Iterable[str],
            drop: Iterable[str]) -> tuple[Table, list[str]]:
    """`build(columns)`, leaving out the `drop` columns one by one, in order, while the table is wider
    than the terminal; also the columns left out."""
    kept, hidden = list(columns), []
    table = build(kept)
    for column in drop:
        if _natural_width(console, table) <= console.width:
            break
        kept.remove(column)
        hidden.append(column)
        table = build(kept)
    return table, hidden


def compare_table(rows: list[dict[str, Any]]) -> None:
    """The compare rows as a table. Where the terminal is too narrow for every column, the least
    telling ones are left out (and named below the table) until the rest fit on one line per run."""
    console = _console()
    same = [c for c in COMPARE_DROP_ORDER if len({compare.cell(c, r.get(c)) for r in rows}) == 1]
    table, hidden = _fitted(console, functools.partial(_compare_grid, rows), compare.COLUMNS,
                            (*COMPARE_DROP_FIRST, *same, *(c for c in COMPARE_DROP_ORDER if c not in same)))
    alike = [c for c in hidden if c in same] if len(rows) > 1 else []
    hidden_text = ", ".join(f"{c} ({compare.cell(c, rows[0].get(c))} in every run)" if c in alike else c
                            for c in hidden)
    note = (f"Not shown, to fit the terminal: {hidden_text} (widen it, or use --format csv|json|markdown)"
            if hidden else None)
    _print_table(console, table, f"{len(rows)} run{'s' if len(rows) != 1 else ''}", note)


# ---------------------------------------------------------------- show


def show_run(run: Run) -> None:
    console = _console()
    _header(console, run)
    _problems(console, run.run)
    console.print(Text("Config (resolved)", style="bold"))
    console.print(Syntax(yaml.safe_dump(run.config, sort_keys=False).rstrip(), "yaml",
                         theme="ansi_dark", background_color="default"))
    _history(console, run)
    diagnosis = run.metrics.get("diagnosis") if isinstance(run.metrics.get("diagnosis"), dict) else {}
    _layers(console, run, diagnosis)
    _diagnosis(console, diagnosis)


def _versions(versions: Any) -> str:
    if not isinstance(versions, dict):
        return "-"
    labels = {"gradexp": "gradexp", "tensorflow": "TensorFlow", "keras": "Keras", "python": "Python"}
    return " · ".join(f"{labels.get(k, k)} {v}" for k, v in versions.items())


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def _header(console: Console, run: Run) -> None:
    info, m = run.run, run.metrics
    console.print(Text.assemble(("Run ", "bold"), str(run.path)), soft_wrap=True)
    fields: list[tuple[str, str | Text]] = [
        ("status", _styled(str(info.get("status", "-")), STATUS_STYLE)),
        ("started", f"{info.get('started_at') or '-'}  ended {info.get('ended_at') or '-'}"),
        ("duration", _duration(info.get("duration_seconds"))),
        ("device", str(info.get("device") or "-")),
        ("versions", _versions(info.get("versions"))),
    ]
    if info.get("xla_flags"):  # runs from before the engine recorded them have none
        fields.append(("XLA flags", str(info["xla_flags"])))
    if info.get("seed") is not None:
        fields.append(("seed", str(info["seed"])))
    if m:
        fields += [("test accuracy", compare.cell("test_accuracy", m.get("test_accuracy"))),
                   ("best val accuracy", _best_val_text(run)),
                   ("seconds / epoch", compare.cell("seconds_per_epoch", m.get("seconds_per_epoch")))]
    for key, value in fields:
        console.print(Text.assemble((f"{key:<18}", "bold"), value), soft_wrap=True)


def _best_val_text(run: Run) -> str:
    """'0.8412 (epoch 7)'; a dash with the reason when no epoch finished or none had a finite val accuracy."""
    value = compare.cell("best_val_accuracy", run.metrics.get("best_val_accuracy"))
    epoch = run.metrics.get("best_epoch")
    if value == "-":
        return "- (no finished epoch)" if not run.history else "- (no finite val accuracy)"
    return f"{value} (epoch {epoch})" if isinstance(epoch, int) else value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _problems(console: Console, info: dict[str, Any]) -> None:
    divergence = info.get("divergence")
    if isinstance(divergence, dict):
        details = ", ".join(f"{k} {v}" for k, v in divergence.items() if v is not None)
        console.print(Text(f"Diverged: {details}", style="bold red"))
    elif divergence:
        console.print(Text(f"Diverged: {divergence}", style="bold red"))
    if info.get("error"):
        console.print(Text(f"Error: {info['error']}", style="bold red"))


def _history(console: Console, run: Run) -> None:
    if not run.history:
        console.print(Text("No epochs recorded (history.csv is missing or empty).", style="dim"))
        return
    best = run.metrics.get("best_epoch")
    table = Table()
    for key in HISTORY_COLUMNS:
        table.add_column(key, justify="right")
    for h in thin(run.history, always=lambda h: best is not None and h.get("epoch") == best):
        epoch = h.get("epoch")
        mark = "*" if best is not None and epoch == best else ""
        table.add_row(f"{num(epoch)}{mark}", *(num(h.get(k), 4 if "acc" in k or "loss" in k else 3)
                                               for k in HISTORY_COLUMNS[1:]))
    _print_table(console, table, "Epochs", "* best validation accuracy" if best is not None else None)


def _spread(rows: list[dict[str, Any]]) -> float:
    norms = [r["grad_norm"] for r in rows if isinstance(r.get("grad_norm"), int | float)
             and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0]
    return max(norms) / min(norms) if norms else 0.0


def _distance(ratio: Any) -> float:
    """How many orders of magnitude a gradient ratio is away from 1 (∞ for non-finite or zero)."""
    if not isinstance(ratio, int | float) or not math.isfinite(ratio) or ratio <= 0:
        return math.inf
    return abs(math.log10(ratio))


def worst_epoch(epochs: dict[int, list[dict[str, Any]]], diagnosis: dict[str, Any]) -> int | None:
    """The unhealthy epoch whose gradient ratio is farthest from 1; when every epoch is healthy (or
    no verdicts were recorded), the epoch with the widest spread of gradient norms across layers."""
    if not epochs:
        return None
    evidence = _mapping(diagnosis.get("evidence"))
    verdicts = _mapping(evidence.get("verdict_by_epoch"))
    ratios = _mapping(evidence.get("gradient_ratio_by_epoch"))
    bad = [e for e in epochs if verdicts.get(str(e), "healthy") != "healthy"]
    if bad:
        return max(bad, key=lambda e: (_distance(ratios.get(str(e))), e))
    return max(epochs, key=lambda e: (_spread(epochs[e]), e))


def _layers(console: Console, run: Run, diagnosis: dict[str, Any]) -> None:
    epochs = layers_by_epoch(run.layers)
    if not epochs:
        console.print(Text("No layer measurements recorded (telemetry.enabled was false, or the run stopped "
                           "before the first measurement).", style="dim"))
        return
    picks: dict[int, list[str]] = {}
    verdicts = _mapping(_mapping(diagnosis.get("evidence")).get("verdict_by_epoch"))
    first, last, worst = min(epochs), max(epochs), worst_epoch(epochs, diagnosis)
    worst_role = ("worst" if verdicts.get(str(worst), "healthy") != "healthy" else
                  "widest spread of gradient norms")  # how worst_epoch picks among healthy epochs
    for epoch, role in ((first, "initialisation" if first == 0 else "first"), (last, "last"), (worst, worst_role)):
        if epoch is not None:
            picks.setdefault(epoch, []).append(role)
    for epoch, roles in sorted(picks.items()):
        verdict = verdicts.get(str(epoch))
        title = f"Layers at epoch {epoch} ({', '.join(roles)})" + (f": {verdict}" if verdict else "")
        _layer_table(console, title, epochs[epoch], diagnosis)


def _layer_grid(rows: list[dict[str, Any]], keys: list[str]) -> Table:
    table = Table()
    for key in keys:
        first = key == LAYER_KEYS[0]
        table.add_column(LAYER_HEADERS[key], justify="left" if first else "right",
                         overflow="fold", no_wrap=not first)
    for r in rows:
        table.add_row(Text(str(r.get("layer", "-"))), *(num(r.get(k)) for k in keys[1:]))
    return table


def _layer_table(console: Console, title: str, rows: list[dict[str, Any]], diagnosis: dict[str, Any]) -> None:
    shown, note = thin_layers(rows, diagnosis, "layers.csv")
    table, hidden = _fitted(console, functools.partial(_layer_grid, shown), LAYER_KEYS, LAYER_DROP_ORDER)
    if hidden:
        left_out = ", ".join(LAYER_HEADERS[k] for k in hidden)
        note = "\n".join(filter(None, (note, f"Not shown, to fit the terminal: {left_out} (all in layers.csv)")))
    _print_table(console, table, title, LAYER_CAPTION + (f"\n{note}" if note else ""))


def _evidence_lines(ev: dict[str, Any]) -> list[str]:
    lines = []
    if "gradient_ratio" in ev:
        lines.append(f"gradient ratio ‖δ‖ {ev.get('first_layer') or 'first layer'} / ‖δ‖ output: "
                     f"{num(ev['gradient_ratio'])} (epoch {num(ev.get('epoch'))})")
    for key in ("dead", "saturated"):
        if f"worst_{key}_fraction" in ev:
            fraction, layer = ev[f"worst_{key}_fraction"], ev.get(f"worst_{key}_layer")
            where = f" ({layer})" if layer and fraction else ""  # no layer is worst at 0
            lines.append(f"worst {key} fraction: {num(fraction)}{where}")
    verdicts = ev.get("verdict_by_epoch")
    if isinstance(verdicts, dict) and verdicts:
        lines.append("verdict by epoch: " + "  ".join(f"{e} {v}" for e, v in thin(list(verdicts.items()))))
    th = ev.get("thresholds")
    if isinstance(th, dict):
        lines.append("thresholds: " + ", ".join(f"{k} {num(v)}" for k, v in th.items()))
    if ev.get("note"):
        lines.append(str(ev["note"]))
    return lines


def _diagnosis(console: Console, diagnosis: dict[str, Any]) -> None:
    if not diagnosis:
        console.print(Text("No diagnosis recorded (metrics.json is missing).", style="dim"))
        return
    verdict = str(diagnosis.get("verdict") or "-")  # null when telemetry was off
    console.print(Text.assemble(("Diagnosis: ", "bold"), (verdict, VERDICT_STYLE.get(verdict, ""))))
    if diagnosis.get("summary"):
        console.print(Text(str(diagnosis["summary"])))
    evidence = diagnosis.get("evidence")
    for line in _evidence_lines(evidence if isinstance(evidence, dict) else {}):
        console.print(Text(f"  {line}"))
