"""Filter patterns (DLwP §5.4.2), batched: many filters of one layer per model call.

Each sample of a batch is one filter's image; the objective, the parametrisation, the transforms
and the optimiser step are per sample, so the batch is just many independent copies of one
filter's loop run at once. ``PatternParams.style`` picks the loop (``styles``): ``book`` (the
default, the book's raw-pixel ascent), ``lucid`` (Fourier-space image, transforms, Adam) or
``maco`` (phase-only Fourier image on a natural spectrum, crops and noise, NAdam; with a
transparency map, ``Pattern.alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convatlas.shared.engine.objectives import selected_channels
from convatlas.shared.engine.param import Parametrisation
from convatlas.shared.engine.param.spectra import is_spectrum_id, spectrum_id
from convatlas.shared.engine.precision import check_precision, key_suffix
from convatlas.shared.engine.quality import pattern_scores
from convatlas.shared.engine.styles import DEFAULT as DEFAULT_STYLE
from convatlas.shared.engine.styles import Style, get_style
from convatlas.shared.engine.transforms import draw_uniforms, n_random
from convatlas.shared.models.registry import LoadedModel


@dataclass(frozen=True)
class PatternParams:
    """What a pattern depends on. ``steps`` and ``step_size`` left as ``None`` take the style's
    defaults (book: 40 steps of size 1; lucid: 256 Adam steps at learning rate 0.05), resolved
    here, so ``PatternParams()`` is the book's defaults and equals ``PatternParams(steps=40)``.
    (``dataclasses.replace(p, style=...)`` keeps ``p``'s resolved steps: build a new one to get
    the other style's defaults.)"""

    size: int = 64
    steps: int | None = None  # None: the style's default
    step_size: float | None = None  # None: the style's default (the Adam learning rate for lucid)
    seed: int = 0
    fallback: str = "preactivation"  # for dead filters; or "none"
    precision: str = "float32"  # of the network passes; or "bfloat16" (convatlas.shared.engine.precision)
    style: str = DEFAULT_STYLE  # "book", "lucid" or "maco" (convatlas.shared.engine.styles)
    #: maco: the magnitude spectrum's natural images: "" (the sample photos', shipped) or the
    #: sha256 of one computed from a folder (``--spectrum-from DIR``; ``param.spectra``)
    spectrum_from: str = ""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        style = get_style(self.style)
        steps = style.default_steps if self.steps is None else self.steps
        object.__setattr__(self, "steps", steps)
        if self.step_size is None:
            object.__setattr__(self, "step_size", style.default_step_size)
        if self.size < 8 or self.size > 1024:
            raise ValueError(f"size must be 8..1024, got {self.size}")
        if steps < 0 or steps > 10_000:
            raise ValueError(f"steps must be 0..10000, got {steps}")
        if self.fallback not in ("preactivation", "none"):
            raise ValueError(f"fallback must be 'preactivation' or 'none', got {self.fallback!r}")
        if self.spectrum_from and not style.spectrum:
            raise ValueError(f"--spectrum-from is for the maco style, not {self.style!r}")
        if self.spectrum_from and not is_spectrum_id(self.spectrum_from):
            raise ValueError(f"spectrum_from must be a sha256 (resolve_spectrum_from), got {self.spectrum_from!r}")

    @property
    def style_spec(self) -> Style:
        return get_style(self.style)

    def slug(self) -> str:
        """Stable text of every parameter that changes the result (used in result keys); the
        book style adds nothing, so keys made before styles existed stay valid; a style with a
        spectrum adds its hash (``-sp`` and 12 hex digits)."""
        spectrum = f"-sp{spectrum_id(self.spectrum_from)[:12]}" if self.style_spec.spectrum else ""
        return (
            f"s{self.size}-n{self.steps}-lr{self.step_size:g}-seed{self.seed}-fb{self.fallback}"
            f"{key_suffix(self.precision)}{self.style_spec.key_suffix()}{spectrum}"
        )

    def parametrisation(self) -> Parametrisation:
        return self.style_spec.make_parametrisation(self.size, self.spectrum_from)


@dataclass
class Pattern:
    filter: int
    image: np.ndarray  # size×size×3 uint8: the book's deprocess (book), the pixels as they are (lucid)
    raw: np.ndarray  # size×size×3 float32, the optimised pixels (0–255 scale)
    dead: bool  # zero gradient on the (untransformed) start image
    fallback_used: bool  # optimised on the pre-activation instead
    start_activation: float
    final_activation: float
    alpha: np.ndarray | None = None  # size×size float32: maco's accumulated |∂objective/∂pixels|
    robustness: float | None = None  # activation kept under random transforms (``quality``)
    peak_activation: float | None = None  # max over positions on the pattern (``quality``)


def _ascent_fn(lm: LoadedModel, layer: str, params: PatternParams):  # noqa: ANN202
    style = params.style_spec
    key: tuple = ("ascent", layer, params.precision)
    if style.name != DEFAULT_STYLE:
        key += (style.name, params.size if style.size_bound else None, params.spectrum_from)
    if key not in lm.compiled:
        from convatlas.shared.engine.backend import build_ascent

        features = selected_channels(lm.any_size_model(params.precision), layer)
        if style.name == DEFAULT_STYLE:
            lm.compiled[key] = build_ascent(features, lm.preprocess)
        else:
            extra = {"alpha": True} if style.alpha else {}
            lm.compiled[key] = build_ascent(
                features,
                lm.preprocess,
                parametrisation=params.parametrisation(),
                transforms=style.transforms(params.size),
                optimiser=style.optimiser,
                **extra,
            )
    return lm.compiled[key]


def filter_patterns(
    lm: LoadedModel,
    layer: str,
    filters: list[int],
    params: PatternParams = PatternParams(),
    batch_size: int = 64,
) -> list[Pattern]:
    """Optimise ``filters`` of ``layer`` in chunks of ``batch_size``; one compiled loop per chunk."""
    from convatlas.shared.engine.backend import constant, to_numpy

    channels = int(lm.any_size_model(params.precision).get_layer(layer).output.shape[-1])
    if bad := [f for f in filters if not 0 <= int(f) < channels]:
        # the planners refuse these before queueing; a direct caller gets the reason, not a
        # gather error from inside the compiled loop
        raise ValueError(f"{layer} has {channels} filters (0–{channels - 1}); "
                         f"asked for {bad[:5]}{' …' if len(bad) > 5 else ''}")
    style = params.style_spec
    param = params.parametrisation()
    transforms = style.transforms(params.size)
    ascend = _ascent_fn(lm, layer, params)
    features = selected_channels(lm.any_size_model(params.precision), layer)
    steps = int(params.steps or 0)
    out: list[Pattern] = []
    for i in range(0, len(filters), batch_size):
        chunk = filters[i : i + batch_size]
        v0 = np.stack([param.init(f, params.seed) for f in chunk])
        if n_random(transforms):
            uniforms = np.stack([draw_uniforms(transforms, f, steps, params.seed) for f in chunk])
        else:
            uniforms = np.zeros((len(chunk), steps, 0), np.float32)
        x, dead, start, final, *alpha = (to_numpy(t) for t in ascend(
            constant(v0),
            constant(chunk, "int32"),
            constant(steps, "int32"),
            constant(params.step_size, "float32"),
            constant(params.fallback == "preactivation"),
            constant(uniforms),
        ))
        robust, peak = pattern_scores(features, lm.preprocess, x, chunk)
        for j, f in enumerate(chunk):
            out.append(
                Pattern(
                    filter=f,
                    image=style.to_image(x[j]),
                    raw=x[j].astype(np.float32),
                    dead=bool(dead[j]),
                    fallback_used=bool(dead[j]) and params.fallback == "preactivation",
                    start_activation=float(start[j]),
                    final_activation=float(final[j]),
                    alpha=alpha[0][j].astype(np.float32) if alpha else None,
                    robustness=float(robust[j]),
                    peak_activation=float(peak[j]),
                )
            )
    return out
