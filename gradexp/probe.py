"""`gradexp probe`: the telemetry of epoch 0 on one batch of real data, without training.

The same statistics as a run's `layers.csv` row 0, taken by the same code (engine.Engine), on a
batch of its own: one batch of `--batch-size` images (256 by default) in one eager pass, where `train`
averages four compiled batches of `training.batch_size`. The figures therefore differ a little
from row 0's; the picture (which layers vanish, explode, die or saturate) is the same.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from . import diagnosis
from .config import Config


def probe(cfg: Config, batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    t0 = time.perf_counter()
    from .train import prepare

    cfg = cfg.model_copy(deep=True)
    cfg.training.batch_size = batch_size
    cfg.telemetry.enabled = True
    dataset, built, device_name = prepare(cfg, device)
    import numpy as np

    # One batch drawn from the training split with the run's seed; validation is not needed.
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
        "config": cfg.name, "device": device_name, "batch_size": len(idx), "layers": zero.layers,
        "diagnosis": diagnosis.diagnose(zero.layers, th), "seconds": time.perf_counter() - t0,
        "parameters": built.model.count_params(), "data": dataset.source.describe(),
    }
