"""Every ImageNet CNN of ``keras.applications`` by name: one table, one builder.

Each row names a Keras constructor, its family (which fixes the preprocessing) and the weights
file Keras publishes for it (file name, URL and the md5/sha256 that Keras's own ``get_file``
checks, copied from the installed Keras source; a test compares them). Models are built by
Keras's own constructors with ``weights="imagenet"``, with Keras's download step served from a
file already verified here (``weights_source``), so the graph is exactly the one Keras uses for
those weights (EfficientNet adds a layer only then); ``weights=None`` gives random weights.

Also here, all computed from the built graph: the Grad-CAM target (the last spatial feature map
before the global pooling), the layers offered for patterns and examples, and a model taking
any input size (filter patterns run at 64 px).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Family:
    """What the members of a ``keras.applications`` family share."""

    title: str
    preprocessing: str  # a key of preprocessing.PREPROCESSORS: what keras' preprocess_input does


# preprocess_input of each family, as the installed Keras defines it: "caffe" (BGR minus the
# ImageNet mean), "tf" ([-1, 1]), "torch" ([0, 1] then mean/std), "none" (the model rescales
# its 0–255 input itself: EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3).
FAMILIES: dict[str, Family] = {
    "vgg": Family("VGG", "caffe"),
    "resnet": Family("ResNet", "caffe"),
    "resnet_v2": Family("ResNetV2", "tf"),
    "mobilenet": Family("MobileNet", "tf"),
    "mobilenet_v3": Family("MobileNetV3", "none"),
    "efficientnet": Family("EfficientNet", "none"),
    "efficientnet_v2": Family("EfficientNetV2", "none"),
    "convnext": Family("ConvNeXt", "none"),
    "densenet": Family("DenseNet", "torch"),
    "inception": Family("Inception", "tf"),
    "xception": Family("Xception", "tf"),
    "nasnet": Family("NASNet", "tf"),
}


@dataclass(frozen=True)
class App:
    """One ``keras.applications`` ImageNet classifier and the weights file Keras publishes."""

    name: str  # convatlas's name for it
    constructor: str  # keras.applications attribute
    family: str  # key of FAMILIES
    input_size: int  # the square input its ImageNet weights were trained at
    weights_name: str  # the file name Keras caches it under (~/.keras/models/NAME)
    weights_url: str
    published_hash: str  # Keras's file_hash: md5 (32 hex) or sha256 (64 hex); "" = none published

    @property
    def hash_algorithm(self) -> str:
        if not self.published_hash:
            return ""
        return "sha256" if len(self.published_hash) == 64 else "md5"

    @property
    def preprocessing(self) -> str:
        return FAMILIES[self.family].preprocessing

    @property
    def description(self) -> str:
        return f"{self.constructor}, ImageNet classifier (keras.applications, {FAMILIES[self.family].title} family)"


_TABLE = (
    App("vgg16", "VGG16", "vgg", 224, "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "64373286793e3c8b2b4e3219cbf3544b"),
    App("vgg19", "VGG19", "vgg", 224, "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        "cbe5617147190e668d6c5d5026f83318"),
    App("resnet50", "ResNet50", "resnet", 224, "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "2cb95161c43110f7111970584f804107"),
    App("resnet101", "ResNet101", "resnet", 224, "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet101_weights_tf_dim_ordering_tf_kernels.h5",
        "f1aeb4b969a6efcfb50fad2f0c20cfc5"),
    App("resnet152", "ResNet152", "resnet", 224, "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet152_weights_tf_dim_ordering_tf_kernels.h5",
        "100835be76be38e30d865e96f2aaae62"),
    App("resnet50v2", "ResNet50V2", "resnet_v2", 224, "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
        "3ef43a0b657b3be2300d5770ece849e0"),
    App("resnet101v2", "ResNet101V2", "resnet_v2", 224, "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
        "6343647c601c52e1368623803854d971"),
    App("resnet152v2", "ResNet152V2", "resnet_v2", 224, "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
        "a49b44d1979771252814e80f8ec446f9"),
    App("mobilenet", "MobileNet", "mobilenet", 224, "mobilenet_1_0_224_tf.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_1_0_224_tf.h5",
        ""),
    App("mobilenetv2", "MobileNetV2", "mobilenet", 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        ""),
    App("mobilenetv3-small", "MobileNetV3Small", "mobilenet_v3", 224, "weights_mobilenet_v3_small_224_1.0_float.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float.h5",
        "8768d4c2e7dee89b9d02b2d03d65d862"),
    App("mobilenetv3-large", "MobileNetV3Large", "mobilenet_v3", 224, "weights_mobilenet_v3_large_224_1.0_float.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float.h5",
        "59e551e166be033d707958cf9e29a6a7"),
    App("efficientnet-b0", "EfficientNetB0", "efficientnet", 224, "efficientnetb0.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
        "902e53a9f72be733fc0bcb005b3ebbac"),
    App("efficientnet-b1", "EfficientNetB1", "efficientnet", 240, "efficientnetb1.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb1.h5",
        "1d254153d4ab51201f1646940f018540"),
    App("efficientnet-b2", "EfficientNetB2", "efficientnet", 260, "efficientnetb2.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb2.h5",
        "b15cce36ff4dcbd00b6dd88e7857a6ad"),
    App("efficientnet-b3", "EfficientNetB3", "efficientnet", 300, "efficientnetb3.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb3.h5",
        "ffd1fdc53d0ce67064dc6a9c7960ede0"),
    App("efficientnet-b4", "EfficientNetB4", "efficientnet", 380, "efficientnetb4.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb4.h5",
        "18c95ad55216b8f92d7e70b3a046e2fc"),
    App("efficientnet-b5", "EfficientNetB5", "efficientnet", 456, "efficientnetb5.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb5.h5",
        "ace28f2a6363774853a83a0b21b9421a"),
    App("efficientnet-b6", "EfficientNetB6", "efficientnet", 528, "efficientnetb6.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb6.h5",
        "165f6e37dce68623721b423839de8be5"),
    App("efficientnet-b7", "EfficientNetB7", "efficientnet", 600, "efficientnetb7.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb7.h5",
        "8c03f828fec3ef71311cd463b6759d99"),
    App("efficientnetv2-b0", "EfficientNetV2B0", "efficientnet_v2", 224, "efficientnetv2-b0.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b0.h5",
        "21ecbf6da12460d5c40bb2f29ceb2188"),
    App("efficientnetv2-b1", "EfficientNetV2B1", "efficientnet_v2", 240, "efficientnetv2-b1.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b1.h5",
        "069f0534ff22adf035c89e2d9547a9dc"),
    App("efficientnetv2-b2", "EfficientNetV2B2", "efficientnet_v2", 260, "efficientnetv2-b2.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b2.h5",
        "424e49f28180edbde1e94797771950a7"),
    App("efficientnetv2-b3", "EfficientNetV2B3", "efficientnet_v2", 300, "efficientnetv2-b3.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b3.h5",
        "1f1fc43bd98a6e4fd8fdfd551e02c7a0"),
    App("efficientnetv2-s", "EfficientNetV2S", "efficientnet_v2", 384, "efficientnetv2-s.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-s.h5",
        "e1d88a8495beba45748fedd0cecbe016"),
    App("efficientnetv2-m", "EfficientNetV2M", "efficientnet_v2", 480, "efficientnetv2-m.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-m.h5",
        "a3bf6aa3276309f4fc6a34aa114c95cd"),
    App("efficientnetv2-l", "EfficientNetV2L", "efficientnet_v2", 480, "efficientnetv2-l.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-l.h5",
        "27e6d408b53c7ebc868fefa357689935"),
    App("convnext-tiny", "ConvNeXtTiny", "convnext", 224, "convnext_tiny.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/convnext_tiny.h5",
        "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff"),
    App("convnext-small", "ConvNeXtSmall", "convnext", 224, "convnext_small.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/convnext_small.h5",
        "ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c"),
    App("convnext-base", "ConvNeXtBase", "convnext", 224, "convnext_base.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/convnext_base.h5",
        "52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6"),
    App("convnext-large", "ConvNeXtLarge", "convnext", 224, "convnext_large.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/convnext_large.h5",
        "070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6"),
    App("convnext-xlarge", "ConvNeXtXLarge", "convnext", 224, "convnext_xlarge.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/convnext_xlarge.h5",
        "c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee"),
    App("densenet121", "DenseNet121", "densenet", 224, "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
        "9d60b8095a5708f2dcce2bca79d332c7"),
    App("densenet169", "DenseNet169", "densenet", 224, "densenet169_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/densenet/densenet169_weights_tf_dim_ordering_tf_kernels.h5",
        "d699b8f76981ab1b30698df4c175e90b"),
    App("densenet201", "DenseNet201", "densenet", 224, "densenet201_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/densenet/densenet201_weights_tf_dim_ordering_tf_kernels.h5",
        "1ceb130c1ea1b78c3bf6114dbdfd8807"),
    App("inception-v3", "InceptionV3", "inception", 299, "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564"),
    App("inception-resnet-v2", "InceptionResNetV2", "inception", 299, "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
        "e693bd0210a403b3192acc6073ad2e96"),
    App("xception", "Xception", "xception", 299, "xception_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
        "0a58e3b7378bc2990ea3b43d5981f1f6"),
    App("nasnet-mobile", "NASNetMobile", "nasnet", 224, "nasnet_mobile.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-mobile.h5",
        "020fb642bf7360b370c678b08e0adf61"),
    App("nasnet-large", "NASNetLarge", "nasnet", 331, "nasnet_large.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-large.h5",
        "11577c9a518f0070763c2b964a382f17"),
)
APPS: dict[str, App] = {a.name: a for a in _TABLE}

# Layer kinds offered for patterns and examples: convolutions, activations, block outputs.
OFFERED_KINDS = (
    "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Activation", "ReLU", "Add", "Concatenate",
    "Identity",
)
POOLING_HEADS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")
LOCAL_POOLING = ("MaxPooling2D", "AveragePooling2D")

_build_lock = threading.RLock()


class UnknownApplication(LookupError):
    pass


def get_app(name: str) -> App:
    try:
        return APPS[name]
    except KeyError:
        raise UnknownApplication(f"unknown keras.applications model {name!r}: choose from {', '.join(APPS)}") from None


# --- building ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fresh_layer_names() -> Iterator[None]:
    """Auto-named layers (``activation_17``) numbered as in a fresh process, whatever was built
    before: layer names are part of jobs and result keys, so they must not depend on history."""
    import collections

    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


@contextlib.contextmanager
def weights_source(app: App, path: Path) -> Iterator[None]:
    """Keras's download step (``get_file``) answered with ``path``, a file already verified.

    Keras asking for another file than the table names is an error: the table is stale."""
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def serve(fname: str | None = None, origin: str | None = None, **kwargs: Any) -> str:
        if fname != app.weights_name or (kwargs.get("file_hash") or "") != app.published_hash:
            raise RuntimeError(
                f"keras asks for {fname} (hash {kwargs.get('file_hash')}) for {app.name}, the table "
                f"names {app.weights_name} ({app.published_hash or 'no hash'}): update applications.py"
            )
        return str(path)

    file_utils.get_file = serve
    try:
        yield
    finally:
        file_utils.get_file = original


def build(name: str, weights_path: Path | None = None) -> Any:
    """The classifier with pre-softmax outputs (Grad-CAM differentiates the logit): random
    weights, or the ImageNet weights in ``weights_path`` (a verified Keras weights file)."""
    from convatlas.shared.tf_env import prepare_keras

    prepare_keras()
    import keras

    app = get_app(name)
    ctor = getattr(keras.applications, app.constructor)
    size = app.input_size
    with _build_lock, _fresh_layer_names():
        serving = weights_source(app, weights_path) if weights_path else contextlib.nullcontext()
        with serving:
            model = ctor(
                weights="imagenet" if weights_path else None,
                include_top=True,
                input_shape=(size, size, 3),
                classifier_activation=None,
            )
        return _name_pooled_map(model, app)


def _step_back(tensor: Any) -> tuple[Any, Any | None]:
    """(the operation that made ``tensor``: a layer or a bare op such as ``x + y``, its first
    input in the same call, or None at the model's input)."""
    op, node_index, _ = tensor._keras_history
    inputs = op._inbound_nodes[node_index].input_tensors
    return op, (inputs[0] if inputs else None)


def _pooled_map(model: Any) -> tuple[Any, Any] | None:
    """(the pooling head, the 4-D map it pools away) on the path from the output back to the
    input: the global pooling (or Flatten) that feeds the classifier. Squeeze-excite poolings
    sit off that path; a Flatten of a 1×1 map (MobileNet's logits) is no spatial pooling."""
    tensor = model.outputs[0]
    while tensor is not None:
        op, src = _step_back(tensor)
        if (src is not None and type(op).__name__ in POOLING_HEADS and len(src.shape) == 4
                and tuple(src.shape[1:3]) != (1, 1)):
            return op, src
        tensor = src
    return None


def _name_pooled_map(model: Any, app: App) -> Any:
    """ConvNeXt's last map is a bare ``x + y`` (no layer, so no name for Grad-CAM to target):
    give it an ``Identity`` layer ``<model>_stage_3_output`` between it and the head."""
    import keras

    pooled = _pooled_map(model)
    if pooled is None or isinstance(_step_back(pooled[1])[0], keras.layers.Layer):
        return model
    head, src = pooled
    x = keras.layers.Identity(name=f"{model.name}_stage_3_output")(src)
    started = False
    for layer in model.layers:  # re-apply the head (the layers from the pooling on)
        started = started or layer is head
        if started:
            x = layer(x)
    return keras.Model(model.input, x, name=model.name)


def gradcam_target(model: Any) -> str | None:
    """The last spatial feature map before the global pooling, read from the graph: the layer
    whose output the classifier's pooling head pools, stepping back over local pooling (VGG's
    ``block5_pool``). None without a pooling head, or when that map is no layer's output."""
    import keras

    pooled = _pooled_map(model)
    if pooled is None:
        return None
    op, src = _step_back(pooled[1])
    while type(op).__name__ in LOCAL_POOLING and src is not None:
        op, src = _step_back(src)
    names = {layer.name for layer in model.layers}
    if isinstance(op, keras.layers.Layer) and op.name in names:
        return str(op.name)
    return None


def offered_layers(model: Any) -> list[tuple[str, str, int]]:
    """(name, kind, channels) of the layers offered for patterns and examples, in order: the
    convolutions, activations and block outputs with a spatial (4-D) output up to the Grad-CAM
    target; maps computed after a global pooling (squeeze-excite convs, 1×1) are left out."""
    target = gradcam_target(model)
    out = []
    for layer in model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        kind = type(layer).__name__
        if shape is not None and len(shape) == 4 and kind in OFFERED_KINDS and tuple(shape[1:3]) != (1, 1):
            out.append((str(layer.name), kind, int(shape[-1])))
        if layer.name == target:
            break
    return out


def any_size(model: Any) -> Any:
    """The trunk up to the Grad-CAM target on an input of any size, sharing nothing with
    ``model`` but equal weights (patterns run at 64 px; the classifier head needs its size)."""
    import keras

    if tuple(model.inputs[0].shape[1:3]) == (None, None):
        return model
    target = gradcam_target(model)
    if target is None:
        raise ValueError(f"{model.name}: no feature map before a pooling head")
    trunk = keras.Model(model.input, model.get_layer(target).output, name=f"{model.name}_trunk")
    with _build_lock, _fresh_layer_names():
        flexible = keras.models.clone_model(trunk, input_tensors=keras.Input((None, None, 3)))
    flexible.set_weights(trunk.get_weights())
    return flexible
