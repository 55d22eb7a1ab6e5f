"""The verdict: did the gradients vanish, explode, die, saturate, or stay healthy? No TensorFlow.

Input is what `layers.csv` holds (one row per epoch and layer) plus the divergence record. Each
epoch gets a verdict by the first rule that holds, in this order:

1. diverged    the engine recorded a non-finite loss or gradient (it checks every step);
2. exploding   a measurement is non-finite although the run did not diverge (the signal overflowed
               float32 on its way through the net; the measurements themselves are overflow-safe), or
               ‖δ‖ of the first hidden layer / ‖δ‖ of the output layer > telemetry.exploding_ratio;
3. dead_units  some hidden layer has ≥ telemetry.dead_fraction of units that output zero for a whole batch;
4. vanishing   that ratio < telemetry.vanishing_ratio;
5. saturated   some hidden layer has > telemetry.saturated_fraction of pre-activations in the flat region;
6. healthy.

δ is the backpropagated gradient ∂L/∂z at a layer's pre-activation, so the ratio says how many
orders of magnitude the error signal gains or loses between the output and the input. Dead units
come before vanishing because a dead layer passes no gradient at all (a ratio of 0), and the cure
differs. The run's verdict is that of its last measured epoch; the verdict at initialisation
(epoch 0) is kept in the evidence so a recovery is visible.
"""

from __future__ import annotations

import math
from typing import Any

from . import catalog
from .runs import layers_by_epoch

DEFAULT_THRESHOLDS = {  # the telemetry section's defaults (config.TelemetryConfig reads them from here)
    "vanishing_ratio": 1e-3,
    "exploding_ratio": 1e3,
    "dead_fraction": 0.7,
    "saturated_fraction": 0.5,
}


def thresholds_of(telemetry_cfg: Any) -> dict[str, float]:
    """A config's telemetry section as the evidence reports it: the verdict's thresholds plus the
    saturation threshold the measurements were taken with."""
    return {k: getattr(telemetry_cfg, k) for k in (*DEFAULT_THRESHOLDS, "saturation_threshold")}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def epoch_evidence(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers one epoch's verdict rests on. `rows` are hidden layers first, output last."""
    hidden, output = rows[:-1], rows[-1]
    first = hidden[0] if hidden else output
    first_delta, out_delta = _num(first.get("delta_norm")), _num(output.get("delta_norm"))
    ev: dict[str, Any] = {
        "first_layer": first["layer"],
        "first_delta_norm": first_delta,
        "output_delta_norm": out_delta,
        "gradient_ratio": _ratio(first_delta, out_delta),
        "kernel_grad_ratio": _ratio(_num(first.get("grad_norm")), _num(output.get("grad_norm"))),
        "first_grad_norm": _num(first.get("grad_norm")),
    }
    ev["worst_dead_fraction"], ev["worst_dead_layer"] = _worst(hidden, "dead_fraction")
    ev["worst_saturated_fraction"], ev["worst_saturated_layer"] = _worst(hidden, "saturated_fraction")
    stds = [_num(r.get("act_std")) for r in hidden]
    if stds:
        ev["act_std_first"], ev["act_std_last"] = stds[0], stds[-1]
    forward = [r["layer"] for r in rows if _non_finite(r, ("act_mean", "act_std"))]
    backward = [r["layer"] for r in rows if _non_finite(r, ("grad_norm", "delta_norm"))]
    ev["non_finite"] = bool(forward or backward)
    # Forward values go bad first near the input, backpropagated ones near the output.
    if forward:
        ev["first_non_finite_layer"], ev["non_finite_in"] = forward[0], "activations"
    elif backward:
        ev["first_non_finite_layer"], ev["non_finite_in"] = backward[-1], "gradients"
    return ev


def _worst(hidden: list[dict[str, Any]], key: str) -> tuple[float, str | None]:
    """The largest finite `key` fraction over the hidden layers and its layer; ties go to the layer
    nearest the input, the first one at that fraction being where the signal is cut. No layer is
    named when the fraction is 0."""
    found = [(f, r["layer"]) for r in hidden if math.isfinite(f := _num(r.get(key)))]
    worst, layer = max(found, key=lambda t: t[0]) if found else (0.0, None)
    return worst, layer if worst > 0 else None


def _non_finite(row: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return any(row.get(k) not in (None, "") and not math.isfinite(_num(row.get(k))) for k in keys)


def epoch_verdict(ev: dict[str, Any], th: dict[str, float]) -> str:
    """One epoch's verdict from its evidence; `diverged` is not among them: only the engine's record
    of a non-finite loss or gradient says that (see `diagnose`)."""
    ratio = ev["gradient_ratio"]
    if ev.get("non_finite") or ratio > th["exploding_ratio"]:
        return "exploding"
    if ev["worst_dead_fraction"] >= th["dead_fraction"]:
        return "dead_units"
    if ratio < th["vanishing_ratio"] or (ev["first_delta_norm"] == 0 and ev["output_delta_norm"] > 0):
        return "vanishing"
    if ev["worst_saturated_fraction"] > th["saturated_fraction"]:
        return "saturated"
    return "healthy"


def format_ratio(x: float) -> str:
    """Ratios and norms as the summaries print them: 2 decimals, or scientific when tiny or huge."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2e}" if (x != 0 and (abs(x) < 0.01 or abs(x) >= 1000)) else f"{x:.2f}"


def _of_output(ratio: float) -> str:
    """'0.29 of the output layer's' or '57.11 times the output layer's': 'of' reads as a fraction."""
    text = format_ratio(ratio)
    return f"{text} times the output layer's" if ratio >= 1 else f"{text} of the output layer's"


def setup_of(cfg: Any) -> dict[str, Any]:
    """What a resolved config already does against each failure, so that the advice leaves it out."""
    m, opt = cfg.model, cfg.optimizer
    activation = catalog.ACTIVATION_BY_NAME[m.activation["name"]]
    return {
        "activation": activation.name, "two_sided": activation.saturation == "two-sided",
        "initializer": m.initializer["name"],
        "fan_scaled": catalog.INITIALIZER_BY_NAME[m.initializer["name"]].fan_scaled,
        "zero_bias": m.bias_initializer["name"] == "zeros" or m.bias_initializer.get("value") == 0,
        "batch_norm": m.batch_norm != "none",
        "clipping": next((k for k in catalog.CLIP_KEYS if getattr(opt, k, None) is not None), None),
    }


def _try(cures: list[str]) -> str:
    """'try a, b or c'; 'try fewer layers' when the config already has every listed cure."""
    cures = cures or ["fewer layers"]
    return "try " + (cures[0] if len(cures) == 1 else f"{', '.join(cures[:-1])} or {cures[-1]}")


def _exploding_cures(setup: dict[str, Any], overflow: bool) -> list[str]:
    cures = [] if setup.get("fan_scaled") else ["a fan-scaled initializer (He/Glorot/LeCun)"]
    if not setup.get("batch_norm"):
        cures.append("batch norm")
    if not overflow and not setup.get("clipping"):  # clipping acts on updates, not on a forward overflow
        cures.append("gradient clipping")
    return cures


def _vanishing_cures(setup: dict[str, Any]) -> list[str]:
    if setup.get("two_sided", True):  # sigmoid-like: flat on both sides, the textbook cause
        cures = ["a non-saturating activation (ReLU family, ELU) with He init"]
    else:
        cures = [] if setup.get("fan_scaled") else ["a fan-scaled initializer (He for the ReLU family, LeCun for SELU)"]
    if not (setup.get("activation") == "selu" and str(setup.get("initializer", "")).startswith("lecun")):
        cures.append("SELU with LeCun init")
    return cures if setup.get("batch_norm") else [*cures, "batch norm"]


def _dead_cures(setup: dict[str, Any]) -> list[str]:
    cures = [] if setup.get("activation") in ("leaky_relu", "prelu", "elu", "selu") else ["leaky_relu/elu"]
    if not setup.get("zero_bias", True):
        cures.append("a zero bias")
    return [*cures, "a smaller learning rate"]


def _saturated_cures(setup: dict[str, Any]) -> list[str]:
    cures = [] if str(setup.get("initializer", "")).startswith("glorot") else ["Glorot init"]
    if not setup.get("batch_norm"):
        cures.append("batch norm")
    return [*cures, "a non-saturating activation"]


def _diverged_text(d: dict[str, Any], setup: dict[str, Any]) -> str:
    step = f" at step {d['step']}" if d.get("step") else ""
    layer, where = d.get("first_layer"), d.get("where")
    if layer and where in ("activation", "weights"):
        what = f"{layer}'s {'activations' if where == 'activation' else 'weights'} became infinite or NaN"
    elif layer:
        what = f"the gradients became infinite or NaN in {layer}"
    else:
        what = "the loss became infinite or NaN"
    cures = ["a lower learning rate"]
    if not setup.get("clipping"):
        cures.append("gradient clipping")
    if not setup.get("fan_scaled", False):
        cures.append("a fan-scaled initializer")
    return f"Training diverged{step}: {what}; {_try(cures)}."


def summary(verdict: str, ev: dict[str, Any], th: dict[str, float], divergence: dict[str, Any] | None,
            setup: dict[str, Any] | None = None) -> str:
    """The one sentence a student reads. `setup` (see `setup_of`) keeps cures the run already uses
    out of the advice."""
    setup = setup or {}
    ratio = ev.get("gradient_ratio", math.nan)
    first = ev.get("first_layer")
    if verdict == "diverged":
        return _diverged_text(divergence or {}, setup)
    if verdict == "exploding" and ev.get("first_non_finite_layer"):
        where = (f"{ev['first_non_finite_layer']}'s activations" if ev.get("non_finite_in") == "activations" else
                 f"the gradients from {ev['first_non_finite_layer']} back")
        when = "at initialisation " if ev.get("epoch") == 0 else ""
        return (f"Exploding: {when}the signal overflows float32 ({where} are infinite or NaN); "
                f"{_try(_exploding_cures(setup, overflow=True))}.")
    if verdict == "exploding":
        text = (f"Gradients exploded: the error signal at {first} is {_of_output(ratio)} "
                f"(limit {format_ratio(th['exploding_ratio'])}); {_try(_exploding_cures(setup, overflow=False))}.")
        if setup.get("clipping"):
            text += (f" Gradient clipping ({setup['clipping']}) bounds each update, not the error signal, so it "
                     "keeps training stable without changing this ratio.")
        return text
    if verdict == "dead_units":
        return (f"Dead units: {ev['worst_dead_fraction']:.0%} of {ev['worst_dead_layer']}'s units output zero "
                f"for every sample of a batch, so they pass no gradient; {_try(_dead_cures(setup))}.")
    if verdict == "vanishing":
        return (f"Gradients vanished: the error signal reaching {first} is {_of_output(ratio)} "
                f"(limit {format_ratio(th['vanishing_ratio'])}); {_try(_vanishing_cures(setup))}.")
    if verdict == "saturated":
        return (f"Saturated: {ev['worst_saturated_fraction']:.0%} of {ev['worst_saturated_layer']}'s pre-activations "
                f"sit in the activation's flat region; {_try(_saturated_cures(setup))}.")
    return (f"Healthy: the error signal reaching {first} is {_of_output(ratio)}; "
            f"{_closest_to_limits(ev, th)}.")


def _closest_to_limits(ev: dict[str, Any], th: dict[str, float]) -> str:
    """The healthy sentence's second half: within the dead and saturated limits, naming a layer that
    comes near one (a tenth of its units or values, or more)."""
    near = [f"{ev[f'worst_{key}_fraction']:.0%} of {ev[f'worst_{key}_layer']}'s {what} "
            f"(limit {th[f'{key}_fraction']:.0%})"
            for key, what in (("dead", "units are dead"), ("saturated", "pre-activations are saturated"))
            if ev.get(f"worst_{key}_layer") and ev.get(f"worst_{key}_fraction", 0) >= 0.1]
    if not near:
        return "no layer has dead units or saturated pre-activations beyond a tenth"
    return "every layer is within the dead-unit and saturation limits, the closest being " + " and ".join(near)


def _was(verdict: str, already: str = "") -> str:
    """'was already exploding', 'already had dead units'."""
    return f"{already}had dead units" if verdict == "dead_units" else f"was {already}{verdict}"


def _at_initialisation(verdict: str, ev: dict[str, Any]) -> str:
    """What a diverged run's measurement at initialisation already showed."""
    text = f"At initialisation it {_was(verdict, 'already ')}"
    ratio = ev["gradient_ratio"]
    if verdict in ("exploding", "vanishing") and math.isfinite(ratio):
        return f"{text}: the error signal at {ev['first_layer']} was {_of_output(ratio)}."
    return f"{text}."


def diagnose(layers: list[dict[str, Any]], thresholds: dict[str, float] | None = None,
             divergence: dict[str, Any] | None = None, telemetry_on: bool = True,
             setup: dict[str, Any] | None = None) -> dict[str, Any]:
    """SPEC's diagnosis object from `layers.csv` rows and the run's divergence record (if any).
    `thresholds` may carry more than the verdict's (see `thresholds_of`): the evidence reports them all.
    `setup` (see `setup_of`) only shapes the advice in the summary."""
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    epochs = layers_by_epoch(layers)
    if not epochs and not divergence:
        why = ("telemetry.enabled is false" if not telemetry_on else
               "the run stopped before the first measurement")
        return {"verdict": None, "evidence": {"note": "no telemetry recorded"},
                "summary": f"No layer measurements were recorded ({why}), so no verdict on gradients."}
    per_epoch = {e: epoch_evidence(rows) for e, rows in epochs.items()}
    verdicts = {e: epoch_verdict(ev, th) for e, ev in per_epoch.items()}
    last = max(per_epoch) if per_epoch else None
    evidence: dict[str, Any] = dict(per_epoch[last]) if last is not None else {}
    evidence.pop("non_finite", None)
    evidence["epoch"] = last
    evidence["verdict_by_epoch"] = {str(e): v for e, v in verdicts.items()}
    evidence["gradient_ratio_by_epoch"] = {str(e): ev["gradient_ratio"] for e, ev in per_epoch.items()}
    evidence["thresholds"] = th
    verdict = verdicts[last] if last is not None else "diverged"
    if divergence:
        verdict = "diverged"
        evidence["divergence"] = divergence
    text = summary(verdict, evidence, th, divergence, setup)
    if verdict == "diverged" and verdicts.get(0, "healthy") != "healthy":
        text += f" {_at_initialisation(verdicts[0], per_epoch[0])}"
    elif 0 in verdicts and last != 0 and verdicts[0] != verdict and verdict != "diverged":
        text += f" At initialisation it {_was(verdicts[0])}."
    return {"verdict": verdict, "evidence": evidence, "summary": text}
