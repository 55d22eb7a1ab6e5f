"""How fast the 100-layer step can get under XLA on this CPU: the step's parts, timed apart.

Builds a bare stack of Dense layers (SELU, batch 32, SGD) as plain TensorFlow variables and compiles,
under gradexp's XLA options, one XLA loop of `--steps` steps per variant:

- full step: forward, the gradient tape's backward pass, the SGD update (what gradexp's step does,
  without its metrics and checks);
- hand-written backward: the same step with the backward pass written out (δ of the cross-entropy,
  then per layer the weight gradient hᵀ·δ, the bias gradient and the next δ = (δ·Wᵀ) ⊙ SELU'(z)). Its
  gradients are checked against the tape's before anything is timed;
- without weight gradients: forward and the chain of input-gradient products δ·Wᵀ, biases updated
  only (the step's critical path: each layer waits for the one before);
- forward only;
- one chain of forward products at the full batch, at half the batch, and two independent half-batch
  chains in the same loop. If XLA ran independent work on the machine's two cores, the two half
  chains would take about as long as one; they take as long as the full batch.

Every variant lives in the same process and is timed chunk by chunk in turn (`--rounds`), so a slow
moment of the machine hits all of them alike; reported are the median milliseconds per step and the
median per-round ratio to the full step.

Run: `.venv/bin/python bench/step_floor.py [--depth 100] [--width 100] [--rounds 10]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from machine_info import machine
from paired import median_ratio, rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def check_hand_grads(make_vars, tape_grads, hand_grads, x, y) -> None:
    """The hand-written backward pass must give the tape's gradients, or its timing means nothing."""
    import tensorflow as tf

    ks, bs = make_vars()
    want = tape_grads(ks, bs, x, y)[1]
    got = hand_grads(ks, bs, x, y)[1]
    worst = max(float(tf.reduce_max(tf.abs(g - w)) / (tf.reduce_max(tf.abs(w)) + 1e-30))
                for g, w in zip(got, want, strict=True))
    if worst > 1e-4:
        raise SystemExit(f"the hand-written backward pass disagrees with the tape (relative difference {worst:.2e})")
    print(f"hand-written backward pass checked against the tape: largest relative difference {worst:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=128, help="steps per timed chunk")
    ap.add_argument("--rounds", type=int, default=10, help="timed chunks per variant, run in turn")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "step_floor.json"))
    args = ap.parse_args()

    from gradexp.engine import native_logs_hidden, use_xla_options

    flags = use_xla_options()
    with native_logs_hidden():
        import numpy as np
        import tensorflow as tf

    rng = np.random.default_rng(0)
    n_samples = args.steps * args.batch
    x_all = tf.constant(rng.standard_normal((n_samples, 784)).astype(np.float32))
    y_all = tf.constant(rng.integers(0, 10, n_samples).astype(np.int32))
    dims = [784] + [args.width] * args.depth + [10]
    lr = 1e-3

    def make_vars() -> tuple[list, list]:
        r = np.random.default_rng(1)
        kernels = [tf.Variable((r.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32))
                   for a, b in zip(dims[:-1], dims[1:], strict=True)]
        biases = [tf.Variable(np.zeros(b, np.float32)) for b in dims[1:]]
        return kernels, biases

    def forward(ks, bs, x):
        """Each layer's pre-activation z, and each layer's input followed by the logits."""
        zs, hs = [], [x]
        for i, (k, b) in enumerate(zip(ks, bs, strict=True)):
            z = tf.matmul(hs[-1], k) + b
            zs.append(z)
            hs.append(tf.nn.selu(z) if i < len(ks) - 1 else z)
        return zs, hs

    def xent(y, logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    def tape_grads(ks, bs, x, y):
        with tf.GradientTape() as tape:
            loss = xent(y, forward(ks, bs, x)[1][-1])
        return loss, tape.gradient(loss, ks + bs)

    def sgd_step(grads_of):
        def step(ks, bs, x, y):
            loss, grads = grads_of(ks, bs, x, y)
            for v, g in zip(ks + bs, grads, strict=True):
                v.assign_sub(lr * g)
            return loss

        return step

    def hand_grads(ks, bs, x, y):
        zs, hs = forward(ks, bs, x)
        logits = hs[-1]
        n = tf.cast(tf.shape(y)[0], tf.float32)
        d = (tf.nn.softmax(logits) - tf.one_hot(y, dims[-1])) / n  # δ of the mean cross-entropy
        dks, dbs = [], []
        for i in reversed(range(len(ks))):
            dks.append(tf.matmul(hs[i], d, transpose_a=True))
            dbs.append(tf.reduce_sum(d, 0))
            if i:
                slope = tf.where(zs[i - 1] > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * tf.exp(zs[i - 1]))
                d = tf.matmul(d, ks[i], transpose_b=True) * slope
        return xent(y, logits), dks[::-1] + dbs[::-1]

    def no_weight_grads(ks, bs, x, y):
        with tf.GradientTape() as tape:
            zs, hs = forward(ks, bs, x)
            loss = xent(y, hs[-1])
        deltas = tape.gradient(loss, zs)  # the chain of δ·Wᵀ products, no hᵀ·δ products
        for b, d in zip(bs, deltas, strict=True):
            b.assign_sub(lr * tf.reduce_sum(d, 0))
        return loss

    def forward_only(ks, bs, x, y):
        zs, hs = forward(ks, bs, x)
        for b, z in zip(bs, zs, strict=True):  # keeps every layer's output in use
            b.assign_sub(lr * tf.reduce_mean(z, 0))
        return xent(y, hs[-1])

    def chains(n_chains: int, rows: int):
        def step(ks, bs, x, y):  # the hidden width×width layers only, fed a width-wide slice of x
            hs = [x[c * rows:(c + 1) * rows, :args.width] for c in range(n_chains)]
            for k, b in zip(ks[1:-1], bs[1:-1], strict=True):
                hs = [tf.nn.selu(tf.matmul(h, k) + b) for h in hs]
            return tf.add_n([tf.reduce_sum(h) for h in hs])

        return step

    half = args.batch // 2
    variants = {
        "full step": sgd_step(tape_grads),
        "hand-written backward": sgd_step(hand_grads),
        "without weight gradients": no_weight_grads,
        "forward only": forward_only,
        f"one chain, {args.batch} rows": chains(1, args.batch),
        f"one chain, {half} rows": chains(1, half),
        f"two chains of {half} rows": chains(2, half),
    }
    check_hand_grads(make_vars, tape_grads, hand_grads, x_all[:args.batch], y_all[:args.batch])
    idx = tf.constant(np.arange(n_samples, dtype=np.int32).reshape(args.steps, args.batch))
    runners = {}
    for name, fn in variants.items():
        ks, bs = make_vars()
        total = tf.Variable(0.0)

        def chunk(idx, ks=ks, bs=bs, fn=fn, total=total):
            total.assign(0.0)
            for s in tf.range(args.steps):
                total.assign_add(fn(ks, bs, tf.gather(x_all, idx[s]), tf.gather(y_all, idx[s])))

        run = tf.function(chunk, jit_compile=True)
        run(idx)  # compiles
        runners[name] = (run, total)

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in rotation(names, r):
            run, total = runners[name]
            t = time.perf_counter()
            run(idx)
            total.numpy()
            times[name].append((time.perf_counter() - t) / args.steps * 1e3)

    print(f"{args.depth} Dense layers of {args.width}, batch {args.batch}, SELU, SGD; XLA_FLAGS={flags}")
    print(f"{args.steps} steps per chunk, {args.rounds} chunks per variant, paired by round:")
    print("| variant | ms per step (median) | ratio to the full step |")
    print("|---|---|---|")
    summary = {}
    for name in names:
        ratio = median_ratio(times[name], times["full step"])
        summary[name] = {"median_ms_per_step": statistics.median(times[name]), "median_ratio": ratio}
        print(f"| {name} | {summary[name]['median_ms_per_step']:.3f} | {ratio:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "depth": args.depth, "width": args.width, "batch": args.batch,
                               "steps": args.steps, "rounds": args.rounds, "xla_flags": flags, "summary": summary,
                               "runs": times}, indent=2))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
