"""keras.applications by name: the table agrees with the installed Keras (published hashes,
preprocessing), every architecture builds from its name with random weights (no download) with
the input size, Grad-CAM target and layer table the registry states, and each family runs a
one-image Grad-CAM, a 4-filter pattern page and an examples pass."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from convatlas.shared.models.applications import APPS, FAMILIES
from convatlas.shared.models.preprocessing import PREPROCESSORS
from convatlas.shared.models.registry import BUILTIN, application_tables, get_spec

# One network per family, and the layer Grad-CAM must pick in it: the map its classifier's
# global pooling pools (ConvNeXt's is a bare add, given an Identity layer of that name).
FAMILY_TARGETS = {
    "vgg16": "block5_conv3",  # past block5_pool, a local pooling
    "resnet50": "conv5_block3_out",
    "resnet50v2": "post_relu",
    "mobilenet": "conv_pw_13_relu",
    "mobilenetv3-small": "activation_17",  # not the 1×1 logits conv after its pooling
    "efficientnet-b0": "top_activation",  # not a squeeze-excite pooling's input
    "efficientnetv2-b0": "top_activation",
    "convnext-tiny": "convnext_tiny_stage_3_output",
    "densenet121": "relu",
    "inception-v3": "mixed10",
    "xception": "block14_sepconv2_act",
    "nasnet-mobile": "activation_187",
}

_CHECK_ALL = r"""
import json, sys
import keras
from convatlas.shared.models import applications as A
from convatlas.shared.models.registry import application_tables
from convatlas.shared.models.write_application_tables import table_of
tables = application_tables()
for name in A.APPS:
    m = A.build(name)
    pooled = A._pooled_map(m)
    target = A.gradcam_target(m)
    op = A._step_back(pooled[1])[0]
    while type(op).__name__ in A.LOCAL_POOLING:
        op = A._step_back(op.input)[0]
    offered = A.offered_layers(m)
    fused = [n for n, _, _ in offered if getattr(m.get_layer(n), "activation", None) not in
             (None, keras.activations.linear) and type(m.get_layer(n)).__name__ != "Activation"
             and not hasattr(m.get_layer(n), "convolution_op")]
    print(json.dumps({"name": name, "input": list(m.inputs[0].shape[1:]), "output": list(m.output.shape[1:]),
                      "target": target, "pooled_by": op.name, "table_ok": tables[name] == table_of(m)
                      and [r[:3] for r in tables[name]["layers"]] == [list(r) for r in offered],
                      "unsupported_fused": fused}), flush=True)
    del m
    keras.backend.clear_session()
"""


def test_the_table_holds_every_family_the_issue_names() -> None:
    ctors = {a.constructor for a in APPS.values()}
    expected = {"VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
                "ResNet152V2", "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
                *(f"EfficientNetB{i}" for i in range(8)),
                *(f"EfficientNetV2{s}" for s in ("B0", "B1", "B2", "B3", "S", "M", "L")),
                *(f"ConvNeXt{s}" for s in ("Tiny", "Small", "Base", "Large", "XLarge")),
                "DenseNet121", "DenseNet169", "DenseNet201", "InceptionV3", "InceptionResNetV2",
                "Xception", "NASNetMobile", "NASNetLarge"}
    assert ctors == expected
    assert set(APPS) <= set(BUILTIN) and set(application_tables()) == set(APPS)
    assert all(a.family in FAMILIES and a.preprocessing in PREPROCESSORS for a in APPS.values())


def test_published_hashes_are_the_installed_keras_ones() -> None:
    """Each hash is the one Keras's own download passes to get_file (read from its source);
    MobileNet V1/V2 publish none."""
    import keras

    for app in APPS.values():
        module = importlib.import_module(getattr(keras.applications, app.constructor).__module__)
        own = source = inspect.getsource(module)
        for used in re.findall(r"from keras\.src\.applications import (\w+)", own):  # ResNetV2 → resnet
            source += inspect.getsource(importlib.import_module(f"keras.src.applications.{used}"))
        if app.published_hash:
            assert f'"{app.published_hash}"' in source, app.name
            assert app.hash_algorithm == ("sha256" if len(app.published_hash) == 64 else "md5")
        else:
            assert "file_hash" not in own, app.name
        assert app.weights_url.startswith("https://storage.googleapis.com/") and app.weights_url.endswith(".h5")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_preprocessing_is_the_familys_preprocess_input(family: str) -> None:
    import keras

    app = next(a for a in APPS.values() if a.family == family)
    module = importlib.import_module(getattr(keras.applications, app.constructor).__module__)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    want = np.asarray(module.preprocess_input(x.copy()))
    got = keras.ops.convert_to_numpy(PREPROCESSORS[app.preprocessing](keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # ≈ 2.5 min: 40 models, NASNetLarge and EfficientNetV2L alone ≈ 15 s each
def test_every_architecture_builds_with_the_stated_size_target_and_layers() -> None:
    """All of them, built once each in one process (random weights, no download)."""
    out = subprocess.run([sys.executable, "-c", _CHECK_ALL], capture_output=True, text=True, timeout=900)
    rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == set(APPS), out.stderr[-3000:]
    for name, r in rows.items():
        spec = get_spec(name)
        assert r["input"] == [spec.input_size, spec.input_size, 3], name
        assert r["output"] == [1000], name
        assert r["target"] == r["pooled_by"] == spec.gradcam_layer, name
        assert r["table_ok"], f"{name}: applications_layers.json.gz is stale (write_application_tables)"
        assert r["unsupported_fused"] == [], name  # the dead-filter fallback needs the pre-activation
    for name, layer in FAMILY_TARGETS.items():
        assert rows[name]["target"] == layer


HEAVY = {"nasnet-mobile", "convnext-tiny", "densenet121", "inception-v3"}  # 40–85 s each on 2 busy cores


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in sorted(FAMILY_TARGETS)])
def test_each_family_runs_gradcam_patterns_and_examples(name: str) -> None:
    """Random weights are enough for the plumbing: one photo, four filters, two examples."""
    import keras

    from convatlas.shared.backend_select import requested_backend
    from convatlas.shared.engine.cam_runner import grad_cam
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.engine.unit_maxima import top_examples
    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import LoadedModel, layer_table

    assert keras.backend.backend() == requested_backend()  # JAX in test_applications_jax.py
    spec = get_spec(name)
    lm = LoadedModel(spec, applications.build(name), "0" * 64, 0.0)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (spec.input_size + 7, spec.input_size - 5, 3), dtype=np.uint8)
    cam = grad_cam(lm, [photo])[0]
    assert cam.layer == FAMILY_TARGETS[name] and cam.heatmap.ndim == 2 and np.isfinite(cam.heatmap).all()

    table = layer_table(name)
    convs = [i for i in table if i.kind == "Conv2D"]
    layer = convs[len(convs) // 3]  # about block-3 depth; VGG's has a fused ReLU
    size = 80 if spec.input_size > 224 else 40  # Inception/Xception need 75/71 px at least
    pats = filter_patterns(lm, layer.name, [0, 1, 2, 3], PatternParams(size=size, steps=2))
    assert [p.filter for p in pats] == [0, 1, 2, 3] and all(np.isfinite(p.raw).all() for p in pats)

    photos = [(f"{i:064x}", rng.integers(0, 256, (spec.input_size,) * 2 + (3,), dtype=np.uint8)) for i in range(2)]
    got = top_examples(lm, photos, [layer.name], k=1, side=spec.input_size, batch=2)
    assert got[layer.name].units == layer.channels


@pytest.mark.slow  # ≈ 1 min: a ConvNeXt build, every CAM method, a bfloat16 clone
def test_convnext_named_map_takes_every_cam_method_and_bfloat16() -> None:
    """ConvNeXt's target is the Identity on its last bare add; its bfloat16 clone must rebuild
    the bare ops too (they take no dtype)."""
    from convatlas.shared.engine.cam_runner import cams
    from convatlas.shared.engine.cams import METHODS
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import LoadedModel

    name = "convnext-tiny"
    lm = LoadedModel(get_spec(name), applications.build(name), "0" * 64, 0.0)
    photo = np.random.default_rng(0).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    got = cams(lm, [photo], methods=tuple(METHODS), scorecam_channels=8)[0]
    assert set(got) == set(METHODS)
    assert all(c.layer == FAMILY_TARGETS[name] and np.isfinite(c.heatmap).all() for c in got.values())
    assert cams(lm, [photo], precision="bfloat16")[0]["gradcam"].layer == FAMILY_TARGETS[name]
    assert len(filter_patterns(lm, FAMILY_TARGETS[name], [0, 1], PatternParams(size=64, steps=2, precision="bfloat16"))) == 2
