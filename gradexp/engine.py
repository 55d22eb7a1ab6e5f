"""The training loop: whole chunks of steps as one compiled TensorFlow function.

The data lives on the device as tensors; each epoch is a fresh permutation of the training
indices, cut into full batches plus the last partial one. A chunk of batches runs inside one
`tf.function` (a `tf.range` loop calling an XLA-compiled step), so Python wakes only between chunks:
to draw progress, to notice Ctrl-C, and at the end of the epoch to read the accumulators.

Every step checks the loss and gradients for non-finite values and skips the update when it finds
one, so a diverged run stops with the last finite weights. Every `telemetry.every`-th step is the
telemetry variant of the step (telemetry.py); the others do only the work `fit` would do.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import telemetry
from .config import Config
from .data import Dataset
from .model import Built, make_optimizer
from .runs import HISTORY_COLUMNS

EVAL_BATCH = 1000

# XLA CPU options the engine compiles with. Small products (a batch of 32 through a 100-wide layer)
# run faster as XLA's own tiled loops with 512-bit vectors than as calls into Eigen: ~17 % less time
# per step on the 100-layer SELU preset, the same on the seed config and on wide layers
# (bench/xla_flags.py). XLA writes the tiled loops only while multi-threaded Eigen is off; large
# products still use Eigen. CPU options only: a GPU ignores them.
XLA_OPTIONS = {
    "xla_cpu_multi_thread_eigen": "false",
    "xla_cpu_prefer_vector_width": "512",
    "xla_backend_extra_options": "xla_llvm_ir_gemm_tile_size=8:4:1*vectwidth",
}


def use_xla_options() -> str:
    """Add the engine's XLA options to `XLA_FLAGS`, each only where the user has not set that option
    (theirs wins), and return the result. XLA reads the variable at its first compilation, not when
    TensorFlow is imported, so the engine calls this as it is made, before it compiles anything."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    given = {f.lstrip("-").split("=", 1)[0] for f in flags}
    flags += [f"--{key}={value}" for key, value in XLA_OPTIONS.items() if key not in given]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return os.environ["XLA_FLAGS"]


@dataclass
class EpochResult:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)

    def history_row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in HISTORY_COLUMNS}


@dataclass
class Divergence:
    epoch: int
    step: int  # global training step, counted from 1
    loss: float
    first_layer: str | None  # first layer (input to output) whose activation or gradient was non-finite
    where: str  # "activation" | "gradient" | "weights" | "loss"


@dataclass
class Progress:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    accuracy: float


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Hide what TensorFlow's C++ side writes to file descriptor 2 while it loads and looks for
    GPUs (oneDNN notices, "could not find cuda drivers", a failed cuInit): those lines come before
    TF_CPP_MIN_LOG_LEVEL takes effect and would bury gradexp's own output. A user who sets
    TF_CPP_MIN_LOG_LEVEL to 0 or 1 sees them."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def select_device(choice: str) -> str:
    """Make TensorFlow use the CPU or a GPU; returns the device's description for run.json."""
    from .errors import GradexpError

    with native_logs_hidden():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if choice == "gpu" and not gpus:
        raise GradexpError("--device gpu: no GPU is visible to TensorFlow; install the CUDA build "
                           "(pip install -e '.[gpu]') or use --device cpu")
    if choice == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU:0 ({details.get('device_name', 'GPU')})"
    return "CPU"


class Engine:
    """Trains one built model on one dataset: `epoch_zero()` once, then `train_epoch()` per epoch."""

    def __init__(self, cfg: Config, built: Built, data: Dataset) -> None:
        self.xla_flags = use_xla_options()
        import tensorflow as tf

        self.tf = tf
        self.cfg = cfg
        self.built = built
        self.batch = cfg.training.batch_size
        self.every = cfg.telemetry.every
        self.telemetry_on = cfg.telemetry.enabled
        self.mixed16 = cfg.training.precision == "mixed_float16"
        self.opt = make_optimizer(cfg)
        self.vars = list(built.logits_model.trainable_variables)
        self.opt.build(self.vars)
        ids = {id(v): i for i, v in enumerate(self.vars)}
        self.kernel_idx = [ids[id(k)] for k in built.kernels]
        kernels = set(self.kernel_idx)
        self.vector_idx = [i for i, v in enumerate(self.vars) if i not in kernels]
        self.saturation = telemetry.saturation_for(cfg.model.activation, cfg.telemetry.saturation_threshold)
        self.n_layers = len(built.layer_names)

        self.x_train = tf.constant(data.x_train)
        self.y_train = tf.constant(data.y_train)
        self.val = (data.x_val, data.y_val)
        self.n_train = len(data.x_train)
        self.rng = np.random.default_rng(cfg.seed)  # the epochs' shuffling, and nothing else
        # Row 0's batches come from a stream of their own, so that switching telemetry (and with it
        # row 0) on or off leaves the order of training, and so its result, unchanged.
        self.rng_zero = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1,)))

        self.acc = telemetry.Accumulator(self.n_layers)
        self.loss_sum = tf.Variable(0.0, trainable=False)
        self.correct_sum = tf.Variable(0.0, trainable=False)
        self.seen = tf.Variable(0.0, trainable=False)
        self.diverged = tf.Variable(False, trainable=False)
        self.bad_step = tf.Variable(-1, trainable=False)
        self.bad_loss = tf.Variable(0.0, trainable=False)
        self.global_step = 0
        self._build_functions()

    # ------------------------------------------------------------ compiled pieces

    def _loss(self, y: Any, logits: Any) -> Any:
        tf = self.tf
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.cast(logits, tf.float32)))

    def _correct(self, y: Any, logits: Any) -> Any:
        tf = self.tf
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.float32))

    def _scaled(self, loss: Any) -> Any:
        return self.opt.scale_loss(loss) if self.mixed16 else loss

    def _apply(self, y: Any, logits: Any, loss: Any, grads: list[Any], step: Any) -> None:
        """Apply the update (and count the step) when the loss and gradients are finite and the
        run has not diverged; otherwise record the first bad step and leave the weights alone.

        The check reads the loss and the gradients of the vector-shaped variables (biases,
        batch-norm offsets and scales, PReLU slopes). Each of those sums its layer's
        backpropagated signal δ over the batch, so a NaN or infinity anywhere in δ shows up there,
        at a fraction of the cost of scanning every kernel gradient. They are joined into one
        vector first so that XLA checks them in one kernel, not one per layer. Steps after a
        divergence run to the end of their chunk as no-ops: leaving the compiled loop early would
        cost every step more than it saves once."""
        tf = self.tf
        if self.mixed16:  # the loss-scale optimizer skips overflowing steps and lowers its scale itself
            finite = tf.math.is_finite(tf.cast(loss, tf.float32))
        else:
            probes = [tf.reshape(tf.cast(grads[i], tf.float32), [-1]) for i in self.vector_idx]
            finite = tf.reduce_all(tf.math.is_finite(tf.concat([tf.reshape(tf.cast(loss, tf.float32), [1]),
                                                                *probes], 0)))

        def update() -> Any:
            self.opt.apply(grads, self.vars)
            return tf.constant(True)

        def record() -> Any:
            self.diverged.assign(True)
            self.bad_step.assign(step)
            self.bad_loss.assign(tf.cast(loss, tf.float32))
            return tf.constant(False)

        def halt() -> Any:
            return tf.cond(self.diverged, lambda: tf.constant(False), record)

        proceed = tf.logical_and(finite, tf.logical_not(self.diverged))
        tf.cond(proceed, update, halt)
        self._count(y, logits, loss, proceed)

    def _plain_step(self, x: Any, y: Any, step: Any) -> None:
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self.built.logits_model(x, training=True)
            loss = self._loss(y, logits)
            scaled = self._scaled(loss)
        grads = tape.gradient(scaled, self.vars)
        self._apply(y, logits, loss, grads, step)

    def _probe(self, x: Any) -> tuple[Any, list[Any], list[Any]]:
        """(logits, pre-activations, activations) per layer, hidden layers then the output layer
        (whose pre-activation is the logits and activation the softmax)."""
        n_hidden = self.n_layers - 1
        outs = self.built.probe_model(x, training=True)
        logits = outs[0]
        return logits, list(outs[1:1 + n_hidden]) + [logits], list(outs[2 + n_hidden:]) + [outs[1 + n_hidden]]

    @contextlib.contextmanager
    def _statistics_kept(self) -> Iterator[None]:
        """Batch-norm moving statistics as they were before a measuring pass in training mode."""
        variables = self.built.model.non_trainable_variables
        saved = [v.numpy() for v in variables]
        try:
            yield
        finally:
            for v, value in zip(variables, saved, strict=True):
                v.assign(value)

    def _measure(self, x: Any, y: Any) -> tuple[Any, Any, list[Any], Any]:
        """Forward and backward through the probe view: (loss, logits, weight grads, stats)."""
        tf = self.tf
        with tf.GradientTape() as tape:
            logits, preacts, acts = self._probe(x)
            loss = self._loss(y, logits)
            scaled = self._scaled(loss)
        all_grads = tape.gradient(scaled, self.vars + preacts)
        grads, deltas = all_grads[:len(self.vars)], all_grads[len(self.vars):]
        if self.mixed16:
            inv = 1.0 / tf.cast(self.opt.dynamic_scale, tf.float32) if hasattr(self.opt, "dynamic_scale") else 1.0
            kernel_grads = [tf.cast(grads[i], tf.float32) * inv for i in self.kernel_idx]
            deltas = [tf.cast(d, tf.float32) * inv for d in deltas]
        else:
            kernel_grads = [grads[i] for i in self.kernel_idx]
        stats = telemetry.layer_stats(preacts, acts, kernel_grads, deltas, self.saturation)
        return loss, logits, grads, stats

    def _telemetry_step(self, x: Any, y: Any, step: Any) -> None:
        loss, logits, grads, stats = self._measure(x, y)
        self.acc.add(stats)
        self._apply(y, logits, loss, grads, step)

    def _count(self, y: Any, logits: Any, loss: Any, applied: Any) -> None:
        """Running loss and accuracy of the steps that were applied. Kept outside the update's
        branch: inside it, XLA keeps the forward pass's outputs alive across the branch and the
        step gets a third slower."""
        tf = self.tf
        n = tf.cast(tf.shape(y)[0], tf.float32)
        zero = tf.constant(0.0)
        self.loss_sum.assign_add(tf.where(applied, tf.cast(loss, tf.float32) * n, zero))
        self.correct_sum.assign_add(tf.where(applied, self._correct(y, logits), zero))
        self.seen.assign_add(tf.where(applied, n, zero))

    def _build_functions(self) -> None:
        tf = self.tf
        plain, telem = self._plain_step, self._telemetry_step
        x_train, y_train, every, telemetry_on = self.x_train, self.y_train, self.every, self.telemetry_on

        def run_plain(idx: Any, start: Any, begin: Any, end: Any) -> None:
            # A while loop, not tf.range: XLA needs a range's bounds at compile time.
            i = tf.convert_to_tensor(begin, tf.int32)
            while i < end:
                plain(tf.gather(x_train, idx[i]), tf.gather(y_train, idx[i]), start + i)
                i += 1

        def chunk(idx: Any, start: Any) -> None:
            """`start` is a multiple of `every` (the chunks that call this are), so each group of
            `every` steps opens with the telemetry step. Nested loops rather than a per-step branch: a
            step inside a conditional costs XLA buffer copies that make every step slower."""
            n = tf.shape(idx)[0]
            if not telemetry_on:
                run_plain(idx, start, 0, n)
                return
            for g in tf.range((n + every - 1) // every):
                first = g * every
                telem(tf.gather(x_train, idx[first]), tf.gather(y_train, idx[first]), start + first)
                run_plain(idx, start, first + 1, tf.minimum(first + every, n))

        # The whole chunk, loop included, is one XLA computation: no per-step launch overhead.
        self._chunk = tf.function(chunk, jit_compile=True)
        # Plain steps only: the last partial batch, and the chunks between two telemetry steps when
        # `every` is longer than a chunk. Compiled (once per batch shape) only when one is met.
        self._plain = tf.function(lambda idx, start: run_plain(idx, start, 0, tf.shape(idx)[0]), jit_compile=True)

        def measure_only(x: Any, y: Any) -> None:
            _, _, _, stats = self._measure(x, y)
            self.acc.add(stats)

        self._measure_only = tf.function(measure_only, jit_compile=True)
        # Probes of very deep nets: XLA compile time grows with depth, one eager pass does not.
        self._measure_eager = measure_only

        def evaluate(x: Any, y: Any) -> tuple[Any, Any]:
            logits = self.built.logits_model(x, training=False)
            n = tf.cast(tf.shape(y)[0], tf.float32)
            return self._loss(y, logits) * n, self._correct(y, logits)

        self._evaluate = tf.function(evaluate, jit_compile=True)

    # ------------------------------------------------------------ Python side, once per chunk

    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if len(x) == 0:
            return math.nan, math.nan
        loss = correct = 0.0
        for start in range(0, len(x), EVAL_BATCH):
            l_sum, c_sum = self._evaluate(x[start:start + EVAL_BATCH], y[start:start + EVAL_BATCH])
            loss += float(l_sum)
            correct += float(c_sum)
        return loss / len(x), correct / len(x)

    def kernels64(self) -> list[np.ndarray]:
        """The kernels as float64 arrays: their norms in float32 overflow long before the weights do."""
        return [k.numpy().astype(np.float64) for k in self.built.kernels]

    def weight_norms(self, kernels: list[np.ndarray] | None = None) -> np.ndarray:
        return np.array([float(np.linalg.norm(k)) for k in (kernels or self.kernels64())])

    def epoch_zero(self, batches: int = 4, compiled: bool = True) -> EpochResult:
        """Row 0 of layers.csv: the network at initialisation, measured on a few training batches
        without updating anything (batch-norm statistics are restored afterwards)."""
        self.acc.reset()
        order = self.rng_zero.permutation(self.n_train)
        size = min(self.batch, self.n_train)
        measure = self._measure_only if compiled else self._measure_eager
        with self._statistics_kept():
            for b in range(min(batches, max(1, self.n_train // size))):
                idx = order[b * size:(b + 1) * size]
                measure(self.tf.gather(self.x_train, idx), self.tf.gather(self.y_train, idx))
        stats = self.acc.read()
        rows = telemetry.epoch_rows(0, self.built.layer_names, stats, self.weight_norms(), None)
        val_loss, val_acc = self.evaluate(*self.val) if len(self.val[0]) else (math.nan, math.nan)
        return EpochResult(0, math.nan, math.nan, val_loss, val_acc, self.learning_rate(), 0.0, rows)

    def learning_rate(self) -> float:
        """The optimizer's current rate, written as the shortest decimal that is the same float32
        (0.01, not the 0.009999999776482582 that float32's 0.01 is exactly)."""
        opt = getattr(self.opt, "inner_optimizer", self.opt)
        return float(str(np.float32(self.tf.convert_to_tensor(opt.learning_rate).numpy())))

    def train_epoch(self, epoch: int, on_progress: Callable[[Progress], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> EpochResult | None:
        """One epoch; None when `should_stop` said so between chunks (the partial epoch is dropped)."""
        tf = self.tf
        t0 = time.perf_counter()
        order = self.rng.permutation(self.n_train).astype(np.int32)
        self._current_order = order
        self._epoch_start = self.global_step
        n_full = self.n_train // self.batch
        full = order[: n_full * self.batch].reshape(n_full, self.batch)
        chunks = [full[start:end] for start, end in self._chunk_bounds(n_full)]
        if self.n_train % self.batch:
            chunks.append(order[n_full * self.batch:][None, :])
        self.acc.reset()
        self.reset_running()
        start_kernels = self.kernels64() if self.telemetry_on else None
        steps_total, done = self.steps_per_epoch(), 0
        for idx in chunks:
            # A chunk that starts on a telemetry step (or the only batch of a tiny set) runs the
            # telemetry loop; the others, and the last partial batch, only plain steps.
            plain = (idx.shape[1] != self.batch and n_full) or (self.telemetry_on and done % self.every)
            run = self._plain if plain else self._chunk
            run(tf.constant(idx), tf.constant(done, tf.int32))
            done += len(idx)
            if bool(self.diverged.numpy()):
                break
            if on_progress:
                loss, acc = self.running()
                on_progress(Progress(epoch, self.cfg.training.epochs, done, steps_total, loss, acc))
            if should_stop and should_stop() and done < steps_total:
                return None
        self.global_step += done
        loss, acc = self.running()
        if bool(self.diverged.numpy()):
            return EpochResult(epoch, loss, acc, math.nan, math.nan, self.learning_rate(),
                               time.perf_counter() - t0, [])
        val_loss, val_acc = self.evaluate(*self.val)
        rows: list[dict[str, Any]] = []
        if self.telemetry_on:
            end_kernels = self.kernels64()
            deltas = self.weight_norms([end - start for end, start in zip(end_kernels, start_kernels, strict=True)])
            ratios = deltas / np.maximum(self.weight_norms(start_kernels), 1e-12)
            norms = self.weight_norms(end_kernels)
            rows = telemetry.epoch_rows(epoch, self.built.layer_names, self.acc.read(), norms, ratios)
        return EpochResult(epoch, loss, acc, val_loss, val_acc, self.learning_rate(), time.perf_counter() - t0, rows)

    def reset_running(self) -> None:
        """Start the running loss and accuracy afresh (each epoch does)."""
        for v in (self.loss_sum, self.correct_sum, self.seen):
            v.assign(0.0)

    def running(self) -> tuple[float, float]:
        """Mean loss and accuracy of the epoch's applied steps so far (NaN before the first)."""
        seen = float(self.seen.numpy())
        if seen == 0:
            return math.nan, math.nan
        return float(self.loss_sum.numpy()) / seen, float(self.correct_sum.numpy()) / seen

    def _chunk_steps(self, n_full: int) -> int:
        """About an eighth of an epoch, at most 256 steps: progress and Ctrl-C are handled between
        chunks. With telemetry on, a multiple of `telemetry.every` when `every` is shorter, so that
        every chunk starts on a telemetry step."""
        steps = max(1, min(256, math.ceil(n_full / 8)))
        if self.telemetry_on and self.every <= steps:
            steps -= steps % self.every
        return steps

    def _chunk_bounds(self, n_full: int) -> list[tuple[int, int]]:
        """(start, end) of each chunk of the epoch's full batches. When `every` is longer than a chunk,
        chunks are also cut at each multiple of `every`, so that a telemetry step always opens one."""
        per_chunk = self._chunk_steps(n_full)
        cut = self.telemetry_on and self.every > per_chunk
        bounds, start = [], 0
        while start < n_full:
            end = min(start + per_chunk, n_full)
            if cut:
                end = min(end, (start // self.every + 1) * self.every)
            bounds.append((start, end))
            start = end
        return bounds

    def divergence(self, epoch: int) -> Divergence | None:
        """Where a non-finite value first appeared, found by one eager pass over the failing batch."""
        if not bool(self.diverged.numpy()):
            return None
        step_in_epoch = int(self.bad_step.numpy())
        layer, where = self._locate_non_finite(step_in_epoch)
        return Divergence(epoch, self._epoch_start + step_in_epoch + 1, float(self.bad_loss.numpy()), layer, where)

    def _locate_non_finite(self, step_in_epoch: int) -> tuple[str | None, str]:
        tf = self.tf
        names = self.built.layer_names
        for name, k in zip(names, self.built.kernels, strict=True):
            if not np.all(np.isfinite(k.numpy())):
                return name, "weights"
        # Re-run the failing batch (the update was skipped, so the weights are those it saw).
        idx = self._last_order_batch(step_in_epoch)
        x, y = tf.gather(self.x_train, idx), tf.gather(self.y_train, idx)
        with self._statistics_kept(), tf.GradientTape() as tape:
            logits, preacts, _ = self._probe(x)
            loss = self._loss(y, logits)
        grads = tape.gradient(loss, list(self.built.kernels))
        # Forward values go bad first near the input; backpropagated ones near the output.
        for name, z in zip(names, preacts, strict=True):
            if not np.all(np.isfinite(z.numpy())):
                return name, "activation"
        for name, g in reversed(list(zip(names, grads, strict=True))):
            if g is not None and not np.all(np.isfinite(g.numpy())):
                return name, "gradient"
        return None, "loss"

    def _last_order_batch(self, step_in_epoch: int) -> np.ndarray:
        return self._current_order[step_in_epoch * self.batch:(step_in_epoch + 1) * self.batch]
