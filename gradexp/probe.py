"""`gradexp probe`: the telemetry of epoch 0 on real data, without training.

The same statistics as a run's `layers.csv` row 0, taken by the same code (engine.Engine's
`epoch_zero`) on one batch of `training.batch_size` training images drawn with the run's seed, in one
eager pass; row 0 is the mean over four such batches. The batch size matters for absolute figures: the
loss is a batch mean, so ‖δ‖ scales about as 1/√batch, and a unit is dead when it outputs zero for
every sample of its batch. `--batch-size` measures with another size; ratios between layers barely move.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from . import diagnosis
from .config import Config


def probe(cfg: Config, batch_size: int | None = None, device: str = "auto") -> dict[str, Any]:
    t0 = time.perf_counter()
    from .train import prepare

    cfg = cfg.model_copy(deep=True)
    cfg.training.batch_size = batch_size = batch_size or cfg.training.batch_size
    cfg.telemetry.enabled = True
    dataset, built, device_name = prepare(cfg, device)
    import numpy as np

    # One batch drawn from the training split with the run's seed ("push one batch through"; train's
    # row 0 averages four); validation is not needed.
    rng = np.random.default_rng(cfg.seed)
    idx = rng.permutation(len(dataset.x_train))[:batch_size]
    small = replace(dataset, x_train=dataset.x_train[idx], y_train=dataset.y_train[idx],
                    x_val=dataset.x_val[:0], y_val=dataset.y_val[:0])
    from .engine import Engine, native_logs_hidden

    eng = Engine(cfg, built, small)
    with native_logs_hidden():  # the eager pass's oneDNN notices (e.g. on float16), not gradexp's output
        zero = eng.epoch_zero(batches=1, compiled=False)
    th = diagnosis.thresholds_of(cfg.telemetry)
    return {
        "config": cfg.name, "device": device_name, "batch_size": len(idx), "batches": 1, "layers": zero.layers,
        "diagnosis": diagnosis.diagnose(zero.layers, th, setup=diagnosis.setup_of(cfg)),
        "seconds": time.perf_counter() - t0,
        "parameters": built.model.count_params(), "data": dataset.source.describe(),
    }
