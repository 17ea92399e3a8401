"""The command-line options that both ``grids`` and ``submit grids`` take, declared once.

``pattern_options`` gives a command one option per ``PatternParams`` field, from the table below,
and hands the command their values as one mapping; ``pattern_params`` turns it into the
validated parameters. A new pattern parameter is a field on ``PatternParams`` plus one row here
(a test checks that every field has its row).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from convatlas.shared.config import Settings
from convatlas.shared.engine import cams, metrics

F = TypeVar("F", bound=Callable[..., Any])

# field of PatternParams → (type, CLI default, help). ``None`` defaults are resolved later:
# steps/step_size by the style, precision by CONVATLAS_PRECISION.
PATTERN_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "size": (int, 64, "Pattern size in pixels, 8..1024; a layer refuses one its map would not survive (VGG block 5 needs 16, Inception's deepest 75)."),
    "steps": (int | None, None, "Optimisation steps; default the style's (book 40, lucid and maco 256)."),
    "step_size": (float | None, None, "Step size: of the RMS-normalised gradient (book, default 1) or Adam's learning rate (lucid, default 0.05) or NAdam's (maco, default 1)."),
    "seed": (int, 0, "Seed of the start images (and of lucid's random transforms)."),
    "fallback": (str, "preactivation", "For dead filters: 'preactivation' or 'none'."),
    "precision": (str | None, None, "Network precision: float32, or bfloat16 (about 2x faster on CPUs with AVX512_BF16/AMX, slower elsewhere; results differ slightly). Default CONVATLAS_PRECISION, else float32."),
    "style": (str, "book", "'book' (the book's raw-pixel gradient ascent), 'lucid' (Fourier-space image, random transforms, Adam) or 'maco' (MaCo: Fourier phase only on a natural-image magnitude, random crops and noise, NAdam; saves a transparency map)."),
    "spectrum_from": (str, "", "maco only: a folder of photos whose mean magnitude spectrum replaces the one shipped (from samples/photos); its hash enters the result key."),
}


# Grad-CAM options of ``heatmaps`` and ``submit heatmaps``; ``None`` = the environment's default.
# The methods and their default come from the CAM registry (``shared.engine.cams``).
HEATMAP_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "method": (str, ",".join(cams.DEFAULT), f"CAM methods, comma-separated: {', '.join(cams.METHODS)} (all computed from the same passes, shown side by side), or 'auto': the one the model's report card (`convatlas report-card`) in --out recommends."),
    "overlay_format": (str | None, None, "Overlay file format: jpeg (quality 90), png or webp. Default CONVATLAS_OVERLAY_FORMAT, else jpeg."),
    "overlay_max_side": (int | None, None, "Longest side of the overlay in pixels; 0 = the photo's original size. Default CONVATLAS_OVERLAY_MAX_SIDE, else 0."),
    "metrics": (str, "", "Faithfulness metrics per method, comma-separated (default none): "
                + ", ".join(f"{m.name} ({m.help})" for m in metrics.REGISTRY.values())
                + ". In each record, report.json (mean ± sd per method), the summary and the gallery."),
}


def _option_group(table: dict[str, tuple[Any, Any, str]], arg: str) -> Callable[[F], F]:
    """A decorator adding one Typer option per row of ``table``; the command receives their
    values as one mapping in its parameter ``arg``."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != arg]
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=Annotated[typ, typer.Option(help=text)])
            for name, (typ, default, text) in table.items()
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            group = {name: kwargs.pop(name) for name in table}
            return fn(**{arg: group}, **kwargs)

        params = own + extra
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate


pattern_options = _option_group(PATTERN_OPTIONS, "pattern")
pattern_options.__doc__ = "Add the pattern options; the command receives ``pattern: Mapping``."
heatmap_options = _option_group(HEATMAP_OPTIONS, "cam")


def pattern_params(pattern: Mapping[str, Any], settings: Settings) -> Any:
    """The validated ``PatternParams`` (``ValueError`` says what is wrong)."""
    from convatlas.shared.engine.patterns import PatternParams

    values = dict(pattern)
    values["precision"] = values.get("precision") or settings.precision
    if values.get("spectrum_from"):
        from convatlas.shared.engine.param.spectra import resolve_spectrum_from

        values["spectrum_from"] = resolve_spectrum_from(values["spectrum_from"])
    return PatternParams(**values)
