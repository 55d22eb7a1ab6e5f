"""Verdicts: the rules on hand-made rows, then the four textbook cases on real Fashion-MNIST batches,
both at initialisation (`probe`) and after a short real training run."""

from __future__ import annotations

import math

import pytest

from gradexp.config import load_config
from gradexp.diagnosis import diagnose, thresholds_of
from gradexp.probe import probe
from gradexp.runs import layers_by_epoch, read_run
from gradexp.train import train


def rows(deltas, dead=None, sat=None, epoch=1, grads=None):
    names = [f"dense_{i}" for i in range(1, len(deltas))] + ["output"]
    out = []
    for i, (name, d) in enumerate(zip(names, deltas, strict=True)):
        hidden = i < len(deltas) - 1
        out.append({"epoch": epoch, "layer": name, "delta_norm": d, "grad_norm": (grads or deltas)[i],
                    "act_mean": 0.1, "act_std": 1.0,
                    "dead_fraction": (dead or [0.0] * len(deltas))[i] if hidden else None,
                    "saturated_fraction": (sat or [0.0] * len(deltas))[i] if hidden else None})
    return out


@pytest.mark.parametrize("layers,verdict", [
    (rows([1.0, 1.0, 1.0]), "healthy"),
    (rows([1e-5, 1e-2, 1.0]), "vanishing"),
    (rows([1e5, 1e2, 1.0]), "exploding"),
    (rows([0.0, 0.0, 1.0], dead=[1.0, 0.9, 0]), "dead_units"),
    (rows([0.5, 1.0, 1.0], sat=[0.8, 0.2, 0]), "saturated"),
    (rows([float("nan"), 1.0, 1.0]), "exploding"),  # a measurement overflowed, the run did not diverge
])
def test_rules(layers, verdict):
    assert diagnose(layers)["verdict"] == verdict


def test_only_the_engines_record_makes_a_run_diverged():
    divergence = {"epoch": 1, "step": 3, "loss": float("nan"), "first_layer": "dense_1", "where": "gradients"}
    for layers in (rows([1.0, 1.0, 1.0]), rows([float("nan"), 1.0, 1.0])):
        d = diagnose(layers, divergence=divergence)
        assert d["verdict"] == "diverged" and d["summary"].startswith("Training diverged at step 3")


def test_an_overflow_at_initialisation_is_exploding_and_names_the_layer():
    """Epoch 0 trains nothing: a non-finite measurement there is the signal overflowing, not a divergence."""
    layers = rows([1.0, 1.0, 1.0, 1.0], epoch=0)
    layers[1]["act_std"] = layers[2]["act_std"] = layers[2]["act_mean"] = float("nan")
    for row in layers[:3]:
        row["grad_norm"] = float("nan")
    d = diagnose(layers)
    assert d["verdict"] == "exploding"
    assert d["evidence"]["first_non_finite_layer"] == "dense_2" and d["evidence"]["non_finite_in"] == "activations"
    assert "at initialisation the signal overflows float32 (dense_2's activations" in d["summary"]
    # the same rows after training, with no divergence recorded: still exploding, not diverged
    later = diagnose([{**r, "epoch": 1} for r in layers])
    assert later["verdict"] == "exploding"
    assert later["summary"].startswith("Exploding: the signal overflows float32 (dense_2's activations")


def test_a_backward_overflow_names_the_layer_nearest_the_output():
    layers = rows([float("inf"), float("inf"), 1.0, 1.0], epoch=0)
    d = diagnose(layers)
    assert d["verdict"] == "exploding" and d["evidence"]["first_non_finite_layer"] == "dense_2"
    assert "the gradients from dense_2 back" in d["summary"]


def test_thresholds_are_configurable():
    layers = rows([1e-2, 0.1, 1.0])
    assert diagnose(layers)["verdict"] == "healthy"
    assert diagnose(layers, {"vanishing_ratio": 0.05})["verdict"] == "vanishing"


def test_last_epoch_decides_and_initial_verdict_is_kept():
    layers = rows([1e-5, 1e-2, 1.0], epoch=0) + rows([1.0, 1.0, 1.0], epoch=1)
    d = diagnose(layers)
    assert d["verdict"] == "healthy"
    assert d["evidence"]["verdict_by_epoch"] == {"0": "vanishing", "1": "healthy"}
    assert "At initialisation it was vanishing" in d["summary"]


def test_divergence_record_wins():
    d = diagnose(rows([1.0, 1.0, 1.0]), divergence={"step": 12, "first_layer": "dense_1", "where": "activation"})
    assert d["verdict"] == "diverged" and "step 12" in d["summary"]


def test_evidence_names_ratio_and_worst_layers():
    ev = diagnose(rows([1e-5, 1e-2, 1.0], dead=[0.1, 0.3, 0]))["evidence"]
    assert ev["gradient_ratio"] == pytest.approx(1e-5)
    assert ev["worst_dead_fraction"] == 0.3 and ev["worst_dead_layer"] == "dense_2"
    assert set(ev["thresholds"]) == {"vanishing_ratio", "exploding_ratio", "dead_fraction", "saturated_fraction"}


# ------------------------------------------------------------ real Fashion-MNIST

CASES = [
    ("configs/sigmoid_deep.yaml", {"vanishing"}),  # 20 sigmoid layers of 100, Glorot uniform
    ("configs/relu_big_normal.yaml", {"exploding", "diverged"}),  # 20 ReLU layers of 100, N(0, 0.5^2)
    ("configs/relu_dead_bias.yaml", {"dead_units"}),  # ReLU with bias -3
    ("configs/leaky_he.yaml", {"healthy"}),  # the seed
    ("configs/sigmoid_deep_bn.yaml", {"healthy"}),  # the cures: batch norm,
    ("configs/relu_big_normal_bn.yaml", {"healthy"}),
    ("configs/relu_big_normal_clip.yaml", {"exploding"}),  # and what clipping does not cure
]


@pytest.mark.realdata
@pytest.mark.parametrize("path,verdicts", CASES)
def test_probe_verdicts_on_real_batches(real_data, path, verdicts):
    result = probe(load_config(path), batch_size=256, device="cpu")
    assert result["diagnosis"]["verdict"] in verdicts, result["diagnosis"]["summary"]


@pytest.mark.realdata
@pytest.mark.parametrize("path,verdicts", CASES)
def test_training_verdicts_on_real_data(real_data, tmp_path, path, verdicts):
    cfg = load_config(path, ["training.epochs=1", "data.limit=3000"])
    outcome = train(cfg, runs_dir=tmp_path, device="cpu")
    assert outcome.metrics["diagnosis"]["verdict"] in verdicts, outcome.metrics["diagnosis"]["summary"]
    if path.endswith("/relu_big_normal.yaml"):  # its outputs overflow: no test loss, no accuracy read from NaN
        assert math.isnan(outcome.metrics["test_loss"]) and math.isnan(outcome.metrics["test_accuracy"])
    if path.endswith("_clip.yaml"):  # clipping keeps it going, and the summary says what it does not fix
        assert outcome.status == "completed"
        assert "bounds each update, not the error signal" in outcome.metrics["diagnosis"]["summary"]


@pytest.mark.realdata
def test_probe_shows_the_layers_before_an_overflow(real_data):
    """90 ReLU layers with N(0, 0.5²) weights overflow float32 on one batch: the layers before the
    overflow are still measured, growing by orders of magnitude, and the verdict is exploding."""
    result = probe(load_config("configs/relu_big_normal.yaml", ["model.depth=90"]), device="cpu")
    assert result["diagnosis"]["verdict"] == "exploding", result["diagnosis"]["summary"]
    stds = [r["act_std"] for r in result["layers"][:-1]]
    measured = [s for s in stds if s == s]  # NaN where the overflow left no finite value
    assert 10 <= len(measured) < 90
    assert stds[:len(measured)] == measured  # the finite ones are the first layers
    # measured far past 1e19, where a float32 sum of squares would have overflowed
    assert measured[-1] > 1e30 and measured[-1] / measured[0] > 1e6
    # past the overflow no fraction is made up from NaN values (NaN is neither zero nor flat)
    unmeasured = [r for r in result["layers"][:-1] if r["act_std"] != r["act_std"]]
    assert unmeasured and all(r["dead_fraction"] != r["dead_fraction"] for r in unmeasured)


@pytest.mark.realdata
def test_a_signal_past_the_square_root_of_float32_is_still_measured(real_data):
    """At 50 layers the activations reach ~1e27: finite in float32, though their squares are not. The
    measurements are finite too, so the verdict rests on a number, not on an overflow."""
    result = probe(load_config("configs/relu_big_normal.yaml", ["model.depth=50"]), device="cpu")
    evidence = result["diagnosis"]["evidence"]
    assert result["diagnosis"]["verdict"] == "exploding"
    assert "first_non_finite_layer" not in evidence
    assert 1e20 < evidence["gradient_ratio"] < 1e35
    assert all(r["act_std"] == r["act_std"] and r["grad_norm"] == r["grad_norm"] for r in result["layers"])


@pytest.mark.realdata
def test_selu_lecun_keeps_activations_normalised_through_100_layers(real_data):
    selu = probe(load_config("configs/selu_lecun_100.yaml"), device="cpu")
    stds = [r["act_std"] for r in selu["layers"][:-1]]
    assert len(stds) == 100 and all(0.5 <= s <= 2.0 for s in stds), (min(stds), max(stds))
    sigmoid = probe(load_config("configs/selu_lecun_100.yaml",
                                ["model.activation=sigmoid", "model.initializer=glorot_uniform"]), device="cpu")
    stds = [r["act_std"] for r in sigmoid["layers"][:-1]]
    assert not all(0.5 <= s <= 2.0 for s in stds)


def test_no_measurement_gives_no_verdict_and_says_why():
    off = diagnose([], telemetry_on=False)
    assert off["verdict"] is None and "telemetry.enabled is false" in off["summary"]
    stopped = diagnose([], telemetry_on=True)
    assert stopped["verdict"] is None and "stopped before the first measurement" in stopped["summary"]


def test_evidence_reports_every_threshold_used(write_config):
    cfg = load_config(write_config({"telemetry": {"saturation_threshold": 3.0, "dead_fraction": 0.9}}))
    d = diagnose([], thresholds_of(cfg.telemetry), {"epoch": 1, "step": 3, "kind": "loss"})
    assert d["evidence"]["thresholds"] == {"vanishing_ratio": 1e-3, "exploding_ratio": 1e3, "dead_fraction": 0.9,
                                           "saturated_fraction": 0.5, "saturation_threshold": 3.0}


SETUP = {"activation": "relu", "two_sided": False, "initializer": "random_normal", "fan_scaled": False,
         "zero_bias": True, "batch_norm": False, "clipping": None}


def test_advice_leaves_out_the_cures_the_run_already_uses():
    exploding = rows([1e5, 1e2, 1.0])
    plain = diagnose(exploding, setup=SETUP)["summary"]
    assert "try a fan-scaled initializer (He/Glorot/LeCun), batch norm or gradient clipping." in plain
    clipped = diagnose(exploding, setup={**SETUP, "clipping": "clipnorm"})["summary"]
    assert "gradient clipping." not in clipped and "or batch norm." in clipped
    assert "Gradient clipping (clipnorm) bounds each update, not the error signal" in clipped
    every_cure = diagnose(exploding, setup={**SETUP, "fan_scaled": True, "batch_norm": True,
                                            "clipping": "clipvalue"})["summary"]
    assert "; try fewer layers." in every_cure
    vanishing = diagnose(rows([1e-5, 1e-2, 1.0]), setup={**SETUP, "activation": "sigmoid", "two_sided": True,
                                                          "batch_norm": True})["summary"]
    assert "try a non-saturating activation (ReLU family, ELU) with He init or SELU with LeCun init." in vanishing
    selu = diagnose(rows([1e-5, 1e-2, 1.0]), setup={**SETUP, "activation": "selu", "initializer": "lecun_normal",
                                                     "fan_scaled": True})["summary"]
    assert selu.endswith("; try batch norm.")  # neither another activation nor the SELU it already is
    dead = diagnose(rows([0.0, 0.0, 1.0], dead=[1.0, 0.9, 0]), setup={**SETUP, "zero_bias": False})["summary"]
    assert "try leaky_relu/elu, a zero bias or a smaller learning rate." in dead


def test_a_forward_overflow_is_not_advised_clipping():
    """Clipping bounds the update; it cannot stop activations overflowing on the way forward."""
    layers = rows([1.0, 1.0, 1.0, 1.0], epoch=0)
    layers[2]["act_std"] = float("nan")
    summary = diagnose(layers, setup=SETUP)["summary"]
    assert "overflows float32 (dense_3's activations" in summary and "clipping" not in summary


def test_a_diverged_run_says_what_went_bad_and_what_initialisation_showed():
    layers = rows([2e10, 1e5, 1.0], epoch=0)
    divergence = {"epoch": 1, "step": 2, "loss": float("nan"), "first_layer": "dense_2", "where": "activation"}
    d = diagnose(layers, divergence=divergence, setup=SETUP)
    assert d["verdict"] == "diverged"
    assert d["summary"].startswith("Training diverged at step 2: dense_2's activations became infinite or NaN;")
    assert d["summary"].endswith("At initialisation it was already exploding: the error signal at dense_1 was "
                                 "2.00e+10 times the output layer's.")
    loss_only = diagnose(rows([1.0, 1.0, 1.0], epoch=0), divergence={"step": 5, "where": "loss"})["summary"]
    assert "the loss became infinite or NaN" in loss_only and "At initialisation" not in loss_only


def test_a_healthy_verdict_names_a_layer_near_a_limit_and_no_layer_at_zero():
    near = diagnose(rows([1.0, 1.0, 1.0], dead=[0.57, 0.2, 0]))
    assert near["verdict"] == "healthy"
    assert "within the dead-unit and saturation limits, the closest being 57% of dense_1's units are dead " \
           "(limit 70%)" in near["summary"]
    recovered = diagnose(rows([0.0, 0.0, 1.0], dead=[1.0, 0.9, 0], epoch=0) + rows([1.0, 1.0, 1.0]))
    assert recovered["summary"].endswith("At initialisation it had dead units.")
    clean = diagnose(rows([1.0, 1.0, 1.0]))
    assert "no layer has dead units or saturated pre-activations beyond a tenth" in clean["summary"]
    assert clean["evidence"]["worst_dead_layer"] is None and clean["evidence"]["worst_saturated_layer"] is None


def test_setup_of_reads_the_cures_from_a_config():
    from gradexp.diagnosis import setup_of

    cfg = load_config("configs/relu_big_normal.yaml", ["optimizer.clipnorm=1.0", "model.batch_norm=after_activation"])
    assert setup_of(cfg) == {"activation": "relu", "two_sided": False, "initializer": "random_normal",
                             "fan_scaled": False, "zero_bias": True, "batch_norm": True, "clipping": "clipnorm"}
    lecun = setup_of(load_config("configs/selu_lecun_100.yaml"))
    assert lecun["fan_scaled"] and not lecun["two_sided"] and lecun["clipping"] is None
    assert setup_of(load_config("configs/sigmoid_deep.yaml"))["two_sided"]
    assert not setup_of(load_config("configs/relu_dead_bias.yaml"))["zero_bias"]


def test_probe_measures_as_the_epoch_zero_row_does(write_config, tmp_path):
    """By default the probe takes train's batch size, so its ‖δ‖ reads like layers.csv's row 0 (a batch
    mean's gradient scales as 1/√batch: 256 images would read ~2.8x lower)."""
    path = write_config({"training": {"epochs": 1}})
    result = probe(load_config(path), device="cpu")
    assert (result["batch_size"], result["batches"]) == (32, 1)
    outcome = train(load_config(path), runs_dir=tmp_path, device="cpu")
    row0 = layers_by_epoch(read_run(outcome.run_dir).layers)[0]
    for p, t in zip(result["layers"], row0, strict=True):
        ratio = p["delta_norm"] / float(t["delta_norm"])
        assert 0.67 < ratio < 1.5, (p["layer"], p["delta_norm"], t["delta_norm"])
    wide = probe(load_config(path), batch_size=256, device="cpu")
    assert wide["layers"][-1]["delta_norm"] < 0.6 * result["layers"][-1]["delta_norm"]
