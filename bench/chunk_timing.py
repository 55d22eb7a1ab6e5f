"""One of gradexp's compiled chunks, ready to run again and again on the same batches: the common
set-up of the benchmarks that time the engine's step itself rather than a whole epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def chunk_runner(cfg: Any, steps: int) -> tuple[Any, Callable[[], float]]:
    """(engine, run) for `cfg` on `steps` batches of its training data; `run()` runs the chunk once
    and returns its wall seconds. The first call compiles. Loads only the images the chunk needs."""
    import numpy as np
    import tensorflow as tf

    from gradexp import engine
    from gradexp.train import prepare

    cfg.data.limit = steps * cfg.training.batch_size * 2  # the chunk's images and a validation split
    dataset, built, _ = prepare(cfg, "cpu")
    eng = engine.Engine(cfg, built, dataset)
    rng = np.random.default_rng(0)
    idx = tf.constant(rng.permutation(len(dataset.x_train))[:steps * cfg.training.batch_size]
                      .reshape(steps, cfg.training.batch_size).astype(np.int32))

    def run() -> float:
        t = time.perf_counter()
        eng._chunk(idx, tf.constant(0))
        eng.loss_sum.numpy()  # waits for the chunk
        return time.perf_counter() - t

    return eng, run
