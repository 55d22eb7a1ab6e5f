"""The one list of initializers, activations and optimizers gradexp knows.

Validation (config.py), the `list-*` commands, the JSON Schema and the model builder all read these
tables, so adding an entry here is the whole job of supporting a new name. Nothing here imports
TensorFlow: Keras classes are named by string and resolved only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter a catalog entry accepts in YAML (`{name: elu, alpha: 0.5}`)."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None  # inclusive
    positive: bool = False  # strictly greater than zero
    nullable: bool = False
    keras_name: str | None = None  # the Keras argument it sets, when named differently

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = "|".join(t.__name__ for t in types)
        return f"{names}|null" if self.nullable else names


@dataclass(frozen=True)
class Initializer:
    name: str  # config name, as Keras spells the function alias
    keras_class: str  # class name in keras.initializers
    distribution: str
    scale: str  # the variance or value formula
    suits: str
    params: tuple[Param, ...] = ()
    for_dense: bool = True  # False: Keras exposes it, but it cannot fill a Dense kernel
    ordered: tuple[tuple[str, str], ...] = ()  # (a, b): parameter a must be less than parameter b
    fan_scaled: bool = False  # its variance is divided by the layer's fan (Glorot, He, LeCun and their general form)


@dataclass(frozen=True)
class Activation:
    name: str
    keras_layer: str  # layer class in keras.layers ("Activation" takes `function`)
    function: str | None  # for keras.layers.Activation
    formula: str
    saturation: str  # "none" | "two-sided" | "negative side" | "above the cap"
    flat_scale: float  # the activation saturates where |z| > flat_scale * telemetry.saturation_threshold
    suggested_initializer: str
    params: tuple[Param, ...] = ()
    notes: str = ""
    ordered: tuple[tuple[str, str], ...] = ()  # (a, b): parameter a must be less than b (when both are set)
    fixed: tuple[tuple[str, Any], ...] = ()  # Keras arguments implied by the name (relu6: max_value 6)
    flat_beyond: float | None = None  # exactly flat beyond this |z|, whatever telemetry.saturation_threshold says

    @property
    def saturating(self) -> bool:
        return self.saturation != "none"

    def layer_arguments(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The Keras layer's arguments for a resolved activation spec: the fixed ones, then each
        parameter under its Keras name. Empty for `keras.layers.Activation` entries."""
        args = dict(self.fixed)
        for p in self.params:
            args[p.keras_name or p.name] = spec[p.name]
        return args


@dataclass(frozen=True)
class Optimizer:
    name: str
    keras_class: str
    description: str
    keys: tuple[str, ...]  # optimizer-section keys it uses besides name/learning_rate/clip*
    fixed: dict[str, Any] = field(default_factory=dict)  # constructor arguments implied by the name


_SEED = Param("seed", int, None, "base seed for this initializer (default: the run's seed); each layer derives "
               "its own from it and the layer's index", minimum=0, nullable=True)


def _fan(name: str, cls: str, dist: str, scale: str, suits: str) -> Initializer:
    """A fan-scaled initializer (its input_axes/output_axes only matter for kernels above 2-D)."""
    return Initializer(name, cls, dist, scale, suits, (_SEED,), fan_scaled=True)


INITIALIZERS: tuple[Initializer, ...] = (
    Initializer("zeros", "Zeros", "constant", "w = 0", "biases"),
    Initializer("ones", "Ones", "constant", "w = 1", "biases, batch-norm scales"),
    Initializer(
        "constant", "Constant", "constant", "w = value", "biases (e.g. -3 to kill ReLUs on purpose)",
        (Param("value", (int, float), 0.0, "the constant"),),
    ),
    Initializer(
        "identity", "Identity", "identity matrix", "w = gain * I (rectangular: ones on the diagonal)",
        "linear and residual nets with equal widths", (Param("gain", (int, float), 1.0, "multiplier"),),
    ),
    Initializer(
        "orthogonal", "Orthogonal", "random orthogonal", "w = gain * Q, Q from the QR of a Gaussian matrix",
        "tanh, linear and very deep nets (dynamical isometry)",
        (Param("gain", (int, float), 1.0, "multiplier"), _SEED),
    ),
    Initializer(
        "random_normal", "RandomNormal", "normal", "N(mean, stddev^2), no fan scaling",
        "demonstrations: a fixed scale vanishes or explodes with depth",
        (Param("mean", (int, float), 0.0, "mean"), Param("stddev", (int, float), 0.05, "standard deviation", positive=True), _SEED),
    ),
    Initializer(
        "random_uniform", "RandomUniform", "uniform", "U(minval, maxval), no fan scaling",
        "demonstrations: a fixed scale vanishes or explodes with depth",
        (Param("minval", (int, float), -0.05, "lower bound"), Param("maxval", (int, float), 0.05, "upper bound"), _SEED),
        ordered=(("minval", "maxval"),),
    ),
    Initializer(
        "truncated_normal", "TruncatedNormal", "truncated normal (2 sd)", "N(mean, stddev^2) cut at 2 sd, no fan scaling",
        "demonstrations: a fixed scale vanishes or explodes with depth",
        (Param("mean", (int, float), 0.0, "mean"), Param("stddev", (int, float), 0.05, "standard deviation", positive=True), _SEED),
    ),
    _fan("glorot_normal", "GlorotNormal", "truncated normal", "var = 2 / (fan_in + fan_out) = 1 / fan_avg", "tanh, sigmoid, softmax, linear (Glorot & Bengio 2010)"),
    _fan("glorot_uniform", "GlorotUniform", "uniform", "limit = sqrt(6 / (fan_in + fan_out)), var = 1 / fan_avg", "tanh, sigmoid, softmax, linear (Glorot & Bengio 2010)"),
    _fan("he_normal", "HeNormal", "truncated normal", "var = 2 / fan_in", "relu, leaky_relu, prelu, elu, gelu, swish (He et al. 2015)"),
    _fan("he_uniform", "HeUniform", "uniform", "limit = sqrt(6 / fan_in), var = 2 / fan_in", "relu, leaky_relu, prelu, elu, gelu, swish (He et al. 2015)"),
    _fan("lecun_normal", "LecunNormal", "truncated normal", "var = 1 / fan_in", "selu (Klambauer et al. 2017), linear"),
    _fan("lecun_uniform", "LecunUniform", "uniform", "limit = sqrt(3 / fan_in), var = 1 / fan_in", "selu (Klambauer et al. 2017), linear"),
    Initializer(
        "variance_scaling", "VarianceScaling", "by `distribution`", "var = scale / fan, fan by `mode` (fan_in | fan_out | fan_avg)",
        "any: the general form of Glorot, He and LeCun",
        (
            Param("scale", (int, float), 1.0, "variance multiplier", positive=True),
            Param("mode", str, "fan_in", "which fan divides the scale", choices=("fan_in", "fan_out", "fan_avg")),
            Param("distribution", str, "truncated_normal", "shape of the distribution",
                  choices=("truncated_normal", "untruncated_normal", "uniform")),
            _SEED,
        ),
        fan_scaled=True,
    ),
    Initializer(
        "stft", "STFT", "short-time Fourier basis", "windowed DFT basis, for Conv1D kernels",
        "Conv1D spectrogram front ends only", for_dense=False,
    ),
)

_SLOPE = Param("negative_slope", (int, float), 0.3, "slope for z < 0", minimum=0.0)

ACTIVATIONS: tuple[Activation, ...] = (
    Activation("relu", "ReLU", None, "max(0, z), capped at max_value; with a threshold t: z if z > t else 0",
               "none", 1.0, "he_normal",
               (Param("max_value", (int, float), None, "cap on the output", positive=True, nullable=True),
                Param("threshold", (int, float), 0.0, "outputs 0 below this value (ThresholdedReLU)", minimum=0.0)),
               "can die: units stuck at zero; with max_value, saturates at and above the cap",
               ordered=(("threshold", "max_value"),)),
    Activation("thresholded_relu", "ReLU", None, "z if z > theta else 0", "none", 1.0, "he_normal",
               (Param("theta", (int, float), 1.0, "threshold", minimum=0.0, keras_name="threshold"),),
               "the seed's ThresholdedReLU, built as ReLU(threshold=theta)"),
    Activation("relu6", "ReLU", None, "min(max(0, z), 6)", "above the cap", 1.0, "he_normal", (), "flat above 6",
               fixed=(("max_value", 6.0),)),
    Activation("leaky_relu", "LeakyReLU", None, "z if z > 0 else negative_slope * z", "none", 1.0, "he_normal", (_SLOPE,)),
    Activation("prelu", "PReLU", None, "z if z > 0 else a * z, a learned per unit", "none", 1.0, "he_normal",
               (Param("initial_slope", (int, float), 0.0, "starting value of the learned slope",
                      keras_name="alpha_initializer"),)),
    Activation("elu", "ELU", None, "z if z > 0 else alpha * (exp(z) - 1)", "negative side", 1.0, "he_normal",
               (Param("alpha", (int, float), 1.0, "negative saturation level", positive=True),)),
    Activation("selu", "Activation", "selu", "1.0507 * elu(z, alpha=1.6733)", "negative side", 1.0, "lecun_normal",
               (), "self-normalising with lecun_normal and standardized inputs"),
    Activation("celu", "Activation", "celu", "max(0, z) + min(0, alpha * (exp(z / alpha) - 1)), alpha = 1", "negative side", 1.0, "he_normal"),
    Activation("gelu", "Activation", "gelu", "z * Phi(z)", "none", 1.0, "he_normal"),
    Activation("swish", "Activation", "silu", "z * sigmoid(z) (SiLU)", "none", 1.0, "he_normal"),
    Activation("mish", "Activation", "mish", "z * tanh(softplus(z))", "none", 1.0, "he_normal"),
    Activation("sigmoid", "Activation", "sigmoid", "1 / (1 + exp(-z))", "two-sided", 1.0, "glorot_uniform",
               (), "derivative at most 0.25: gradients shrink with depth"),
    Activation("hard_sigmoid", "Activation", "hard_sigmoid", "relu6(z + 3) / 6", "two-sided", 1.0, "glorot_uniform",
               (), "exactly flat beyond |z| = 3", flat_beyond=3.0),
    Activation("tanh", "Activation", "tanh", "(exp(z) - exp(-z)) / (exp(z) + exp(-z))", "two-sided", 0.5, "glorot_uniform",
               (), "tanh(z) = 2 sigmoid(2z) - 1, so it flattens at half the sigmoid's |z|"),
    Activation("softsign", "Activation", "softsign", "z / (1 + |z|)", "two-sided", 1.0, "glorot_uniform"),
    Activation("softplus", "Activation", "softplus", "log(1 + exp(z))", "negative side", 1.0, "he_normal"),
    Activation("linear", "Activation", "linear", "z (no non-linearity)", "none", 1.0, "glorot_uniform",
               (), "a deep linear net is still a linear model"),
)

# Keys every optimizer takes; the rest are listed per optimizer.
CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")  # at most one per config
COMMON_OPTIMIZER_KEYS = ("name", "learning_rate", *CLIP_KEYS)

OPTIMIZERS: tuple[Optimizer, ...] = (
    Optimizer("sgd", "SGD", "plain stochastic gradient descent (momentum 0 unless set)", ("momentum",)),
    Optimizer("momentum", "SGD", "SGD with momentum (default 0.9)", ("momentum",)),
    Optimizer("nesterov", "SGD", "SGD with Nesterov momentum (default 0.9)", ("momentum",), {"nesterov": True}),
    Optimizer("adagrad", "Adagrad", "per-parameter rates from accumulated squared gradients", ("epsilon",)),
    Optimizer("rmsprop", "RMSprop", "moving average of squared gradients", ("rho", "momentum", "epsilon")),
    Optimizer("adam", "Adam", "momentum + RMSprop with bias correction", ("beta_1", "beta_2", "epsilon")),
    Optimizer("adamax", "Adamax", "Adam with the infinity norm", ("beta_1", "beta_2", "epsilon")),
    Optimizer("nadam", "Nadam", "Adam with Nesterov momentum", ("beta_1", "beta_2", "epsilon")),
    Optimizer("adamw", "AdamW", "Adam with decoupled weight decay", ("beta_1", "beta_2", "epsilon", "weight_decay")),
)

# Defaults for optimizer keys when the config leaves them out; per optimizer where they differ.
OPTIMIZER_KEY_DEFAULTS: dict[str, Any] = {
    "momentum": 0.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "rho": 0.9, "weight_decay": 0.004,
}
OPTIMIZER_DEFAULT_OVERRIDES: dict[str, dict[str, Any]] = {
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
}

OPTIMIZER_KEY_HELP: dict[str, str] = {
    "learning_rate": "step size (> 0)",
    "momentum": "momentum factor in [0, 1)",
    "beta_1": "decay of the first-moment estimate, in [0, 1)",
    "beta_2": "decay of the second-moment estimate, in [0, 1)",
    "epsilon": "numerical stability term (> 0)",
    "rho": "decay of the squared-gradient average, in [0, 1)",
    "weight_decay": "decoupled weight decay (>= 0)",
    "clipnorm": "clip each gradient tensor to this L2 norm",
    "clipvalue": "clip each gradient element to [-v, v]",
    "global_clipnorm": "clip all gradients together to this global L2 norm",
}

INITIALIZER_BY_NAME = {i.name: i for i in INITIALIZERS}
ACTIVATION_BY_NAME = {a.name: a for a in ACTIVATIONS}
OPTIMIZER_BY_NAME = {o.name: o for o in OPTIMIZERS}


def optimizer_keys(name: str) -> tuple[str, ...]:
    """Every optimizer-section key that `name` accepts."""
    return COMMON_OPTIMIZER_KEYS + OPTIMIZER_BY_NAME[name].keys


def optimizer_default(name: str, key: str) -> Any:
    return OPTIMIZER_DEFAULT_OVERRIDES.get(name, {}).get(key, OPTIMIZER_KEY_DEFAULTS[key])


def initializer_rows() -> list[dict[str, Any]]:
    return [
        {
            "name": i.name, "class": f"keras.initializers.{i.keras_class}", "distribution": i.distribution,
            "scale": i.scale, "suits": i.suits, "dense": i.for_dense,
            "params": {p.name: p.default for p in i.params},
        }
        for i in INITIALIZERS
    ]


def activation_rows() -> list[dict[str, Any]]:
    return [
        {
            "name": a.name, "formula": a.formula, "saturating": a.saturating, "saturation": a.saturation,
            "suggested_initializer": a.suggested_initializer,
            "params": {p.name: p.default for p in a.params}, "notes": a.notes,
        }
        for a in ACTIVATIONS
    ]


def optimizer_rows() -> list[dict[str, Any]]:
    return [
        {
            "name": o.name, "class": f"keras.optimizers.{o.keras_class}", "description": o.description,
            "keys": {k: optimizer_default(o.name, k) for k in o.keys},
            "common_keys": list(COMMON_OPTIMIZER_KEYS[1:]),
        }
        for o in OPTIMIZERS
    ]
