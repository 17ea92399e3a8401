"""Images in and out: user photos decoded safely into RGB arrays, results encoded to files.

Photos arrive in bulk, as folders of real-world files: phone JPEGs with EXIF rotation, CMYK
scans, 16-bit PNGs, animated GIFs, and also empty files, half-downloaded JPEGs, HTML error pages
saved as ``.png`` and decompression bombs. Every one of these must either become an upright
H×W×3 ``uint8`` RGB array or raise :class:`~convatlas.shared.images.checks.ImageDecodeError`
with a sentence a user can act on; nothing else may escape, so a worker can skip one bad file and
carry on with the batch.

* :mod:`.checks` — what is refused before a pixel is decoded (pixel limit, size, aspect ratio,
  file size) and what a file that is not an image most probably is; ``ImageDecodeError``;
* :mod:`.pixels` — any Pillow pixel mode (alpha, ICC, CMYK, 16-bit, float) and EXIF orientation
  to upright RGB ``uint8``;
* :mod:`.decode` — the decoder (OpenCV or Pillow, DCT-reduced JPEGs) and what callers use:
  ``decode_image``, ``decode_photo``, ``decode_for_model``, ``load_image``, ``model_square``;
* :mod:`.encode` — results as files: ``encode_png`` (byte-stable PNG) and ``encode_image``
  (JPEG, PNG or WebP overlays).

Each module's docstring lists its decisions, each with a constant or a paragraph to change.
"""
