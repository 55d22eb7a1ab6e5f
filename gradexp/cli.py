"""The command line. Each command parses, calls one library function, and renders the result.

Imports stay light at module level: TensorFlow is loaded only inside `train` and `probe`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import GradexpError, os_error_line

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns library errors into one `Error: ...` line and exit 2; other exceptions into exit 1
    with the traceback only under --debug. Click's own usage errors (a bad option value, an
    unknown command) become one line too, naming the help to read."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        with _CommandProcess():
            self._main(*args, **kwargs)

    def _main(self, *args: Any, **kwargs: Any) -> None:
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `gradexp`: the help, exit 2
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "gradexp"
            if exc.ctx is None:
                # Click leaves a missing option value without its command: the first word that is
                # not an option names it (gradexp's own options take no value)
                args = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
                command = next((a for a in args if not a.startswith("-")), None)
                where = f"{where} {command}" if command in self.commands else where
            click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GradexpError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:  # `gradexp ... | head`: the reader has gone; stop quietly, as cat and grep do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(128 + 13)  # 128 + SIGPIPE
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as exc:  # about a path the user gave or its disk, whatever the command: one line, exit 2
            line = os_error_line(exc)
            if line is None or (ctx.obj and ctx.obj.get("debug")):
                self._internal(ctx, exc)
            click.echo(f"Error: {line}", err=True)
            ctx.exit(2)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            self._internal(ctx, exc)

    @staticmethod
    def _internal(ctx: click.Context, exc: Exception) -> None:
        if ctx.obj and ctx.obj.get("debug"):
            raise exc
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]  # one line, as every error
        text = lines[0] + (" …" if len(lines) > 1 else "") if lines else ""
        click.echo(f"Internal error: {type(exc).__name__}: {text} (rerun with `gradexp --debug ...` "
                   "for the traceback)", err=True)
        ctx.exit(1)


class _CommandProcess:
    """What a command changes in its process for its duration, and puts back after (a program or a
    test that calls `main` keeps its own handling):
    - SIGTERM (a `kill`, a CI timeout) ends every command as Ctrl-C does: 'Interrupted.', exit 130;
    - where stdout or stderr cannot encode the tables' ‖, δ and · (an ASCII or Latin-1 locale,
      PYTHONIOENCODING=ascii), they print as '?' instead of failing the command."""

    def __enter__(self) -> _CommandProcess:
        import signal

        self.handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.errors = {stream: getattr(stream, "errors", None) for stream in (sys.stdout, sys.stderr)}
        try:
            signal.signal(signal.SIGTERM, _interrupt)
        except ValueError:  # not the main thread (an embedding program): leave its handling alone
            pass
        for stream in self.errors:
            _set_errors(stream, "replace")
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self.handlers.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):  # not the main thread, or a handler set outside Python
                pass
        for stream, errors in self.errors.items():
            if errors:
                _set_errors(stream, errors)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _set_errors(stream: Any, errors: str) -> None:
    try:
        stream.reconfigure(errors=errors)
    except (AttributeError, ValueError, OSError):  # not a text stream that can (a test's capture)
        pass


def entry() -> None:
    """The `gradexp` program and `python -m gradexp`: `main`, then an exit without Python's and
    TensorFlow's teardown. Once a command has returned, every file it wrote is closed, and the
    second or so TensorFlow takes to tear down is a window in which a late Ctrl-C would turn a
    finished command's exit code into 130 (or a SIGTERM into 143)."""
    try:
        main(prog_name="gradexp")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # the reader has gone (exit 141 says so already)
                pass
        os._exit(code)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="gradexp")
@click.option("--debug", is_flag=True, help="Show full tracebacks for internal errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Train Keras MLPs on Fashion-MNIST and see, layer by layer, whether gradients vanish,
    explode, die or stay healthy.

    \b
    Quick start:
      gradexp train configs/leaky_he.yaml
      gradexp compare runs/
      gradexp probe configs/selu_lecun_100.yaml
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key (dotted, value parsed as YAML), e.g. --set optimizer.learning_rate=0.01. Repeatable.")


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@_set_option
@click.option("--runs-dir", type=click.Path(), default="runs", show_default=True,
              help="Where the run folder is created.")
@click.option("--name", default=None, help="Run-name suffix (default: the config's name or file stem).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="auto uses a GPU when TensorFlow sees one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print only the summary.")
def train(config: Path, overrides: tuple[str, ...], runs_dir: str, name: str | None, device: str, quiet: bool) -> None:
    """Train the net described by CONFIG and write a run folder.

    Exit codes: 0 completed, 1 failed (an internal or disk error after training started), 2 bad
    config/data/usage, 3 diverged, 130 interrupted, 141 output reader gone (the run still finishes).
    """
    from . import render
    from .config import load_config

    cfg = load_config(config, overrides)
    from .train import train as run_training

    interrupts = _Interrupts()  # before training starts; during training, train's own handler takes over
    reporter = render.TrainReporter(quiet=quiet)
    outcome = run_training(cfg, runs_dir=runs_dir, name=name, device=device, argv=sys.argv, reporter=reporter)
    interrupts.done()
    render.train_summary(outcome)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@_set_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per probe batch  [default: the config's training.batch_size]")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements and diagnosis as JSON.")
def probe(config: Path, overrides: tuple[str, ...], batch_size: int | None, device: str, as_json: bool) -> None:
    """Measure the net at initialisation on real data, as train's epoch-0 row does: no training.

    Per layer: activation mean/std, dead and saturated fractions, gradient norms; then the verdict.
    One batch of training.batch_size images, as train's epoch-0 row takes (‖δ‖ scales about as 1/√batch).
    """
    from . import render
    from .config import load_config
    from .probe import probe as run_probe

    cfg = load_config(config, overrides)
    interrupts = _Interrupts()
    result = run_probe(cfg, batch_size=batch_size, device=device)
    interrupts.check()
    interrupts.done()
    if as_json:
        from .runs import clean

        click.echo(json.dumps(clean(result), indent=2, default=str, allow_nan=False))
    else:
        render.probe_report(result)


class _Interrupts:
    """Ctrl-C and SIGTERM (a `kill`, a CI timeout) end the command alike: 'Interrupted.', exit 130.
    The signal is also remembered: a KeyboardInterrupt raised while TensorFlow imports can be
    swallowed by a bare `except` inside it, and `check()` raises it again once the work returns."""

    def __init__(self) -> None:
        import signal

        self.received = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt

    @staticmethod
    def done() -> None:
        """The work is over and its outcome settled: what is left is output and exit, whose code says
        how it ended. A late signal (during the summary) is ignored rather than turning a completed
        run's exit code into 130 or 143; `entry` then exits without TensorFlow's teardown, and
        `_CommandProcess` puts the previous handlers back for a program that called `main`. (A
        Python handler that does nothing, not SIG_IGN, which programs started later would inherit.)"""
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)


def _list_command(name: str, rows_fn: str, render_fn: str, doc: str) -> None:
    @main.command(name=name, help=doc)
    @click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
    def command(as_json: bool) -> None:
        from . import catalog, render

        rows = getattr(catalog, rows_fn)()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            getattr(render, render_fn)(rows)


_list_command("list-initializers", "initializer_rows", "initializer_table",
              "Every Keras initializer: config name, class, distribution, scale formula, what it suits.")
_list_command("list-activations", "activation_rows", "activation_table",
              "Every supported activation: parameters, saturating or not, suggested initializer.")
_list_command("list-optimizers", "optimizer_rows", "optimizer_table",
              "Supported optimizers with their config keys and defaults.")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the config file (for editors)."""
    from .config_schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@click.option("--check", is_flag=True, help="Also read every file and verify its SHA-256.")
@click.option("--dir", "data_dir", default=None, help="Look here too, as data.dir would.")
def data(check: bool, data_dir: str | None) -> None:
    """Where Fashion-MNIST was found (and, with --check, that it verifies)."""
    from . import data as data_mod
    from . import render

    if check:
        source = data_mod.locate(data_dir, download=False, dir_name="--dir")[0]
    else:
        source = data_mod.find(data_dir, download=False, dir_name="--dir")
    render.data_report(source, checked=check)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
@click.option("--sort", "sort_key", default=None, help="Column to sort by; prefix with - for descending.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True)
@click.option("--plot", type=click.Path(), default=None, metavar="FILE.png", help="Also draw the runs into FILE.png.")
def compare(runs: tuple[Path, ...], sort_key: str | None, fmt: str, plot: str | None) -> None:
    """One row per run. RUNS are run folders or folders holding them (runs/, runs/*)."""
    from . import compare as compare_mod
    from . import plots, render_runs  # plots imports matplotlib only when drawing

    target = plots.check_path(plot) if plot is not None else None  # a bad target fails before any output
    found = _collect(runs)
    rows = compare_mod.sort_rows(compare_mod.rows(found), sort_key)
    if target is not None:  # before the table: a reader that leaves early (`| head`) does not cost the file
        plots.compare_plot(found, target)
    if fmt == "table":
        render_runs.compare_table(rows)
    else:
        click.echo(compare_mod.format_rows(rows, fmt), nl=False)
    if target is not None:
        click.echo(f"Plot written to {target}", err=True)


@main.command()
@click.argument("run", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
def show(run: tuple[Path, ...]) -> None:
    """One run in depth: config, epochs, layers (first, last and worst epochs), diagnosis.

    Given several runs (runs/*) or their parent folder (runs/), shows each in turn."""
    from . import render_runs

    found = _collect(run)
    for r in found:
        render_runs.show_run(r)


def _collect(paths: tuple[Path, ...]) -> list[Any]:
    from .errors import RunsError
    from .runs import collect

    found, warnings = collect(list(paths))
    for w in warnings:
        click.echo(f"Warning: {w}", err=True)
    if not found:
        raise RunsError(f"no readable run folders in {' '.join(str(p) for p in paths)}; "
                        "give run folders or their parent (e.g. runs/)")
    return found


if __name__ == "__main__":  # pragma: no cover
    main()
