"""Shared fixtures. Tiny Fashion-MNIST-shaped IDX files go through the same loader as the real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from gradexp.data import write_idx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Output is checked as it looks when it is not a terminal, whatever width the caller (or a pytest-xdist
# worker, which gets COLUMNS=80) sets; the tests of the width settings set it themselves.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

TINY_TRAIN, TINY_TEST = 700, 120


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy images: each class lights a different 7x7 block, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 4)
        images[i, r * 7:(r + 1) * 7 + 7, c * 7:(c + 1) * 7] = 200
    return images, labels


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-fashion")
    write_idx(folder, make_images(TINY_TRAIN, 1), make_images(TINY_TEST, 2))
    return folder


@pytest.fixture
def write_config(tmp_path: Path, tiny_data: Path):
    """write_config(dict, name="tiny") -> path of a YAML file whose data.dir is the tiny data,
    with a small validation split and few epochs unless the dict says otherwise."""

    def _write(overrides: dict | None = None, name: str = "tiny") -> Path:
        cfg: dict = {
            "seed": 1,
            "data": {"dir": str(tiny_data), "validation_size": 100},
            "model": {"activation": "relu", "initializer": "he_normal", "depth": 2, "width": [32, 16]},
            "optimizer": {"name": "sgd", "learning_rate": 0.05},
            "training": {"epochs": 2, "batch_size": 32},
        }
        for section, values in (overrides or {}).items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return _write


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder gradexp itself finds the real data in (the same places `make data` looks), without
    trying a download."""
    from gradexp import data
    from gradexp.errors import DataError

    try:
        return Path(data.find(download=False).folder)
    except DataError:
        pytest.fail("real Fashion-MNIST is missing: run `make test` (it installs dataset-fashion-mnist)")


def engine_for(tiny_data: Path, raw: dict, engine_class=None, **sections: dict):
    """An Engine (or `engine_class`) over the tiny data for the config mapping `raw`, each section in
    `sections` merged into raw's, seeded as `gradexp train` seeds it."""
    import keras

    from gradexp import data
    from gradexp.config import validate
    from gradexp.engine import Engine
    from gradexp.model import build

    raw = {**raw, "data": {"dir": str(tiny_data), "validation_size": 100, **raw.get("data", {})}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    cfg = validate(raw)
    ds = data.load(cfg.data.validation_size, cfg.data.scaling, cfg.data.dir, cfg.data.limit)
    keras.utils.set_random_seed(cfg.seed)
    return (engine_class or Engine)(cfg, build(cfg), ds)
