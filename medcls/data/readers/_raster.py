"""PNG, JPEG, BMP and TIFF through Pillow (8 and 16 bit, grayscale and colour)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcls.data.readers._core import Image, library_errors
from medcls.errors import DataError

__all__ = ["read_raster"]

# Pillow modes whose pixels are one number each, kept as they are
_GRAY_MODES = {"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def _page_array(im: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Return one Pillow page as ``(H, W, C)`` with C = 1 (gray) or 3 (colour)."""
    mode = im.mode
    notes: dict[str, Any] = {"mode": mode}
    if mode == "1":
        im = im.convert("L")  # bilevel: 0 / 255
    elif mode == "P" or mode == "PA":
        palette = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        gray = palette.size > 0 and bool((palette == palette[:, :1]).all())
        if mode == "PA" or "transparency" in im.info:
            notes["alpha_dropped"] = True
        im = im.convert("L" if gray else "RGB")
    elif mode == "LA":
        notes["alpha_dropped"] = True
        im = im.getchannel("L")
    elif mode == "RGBA":
        notes["alpha_dropped"] = True
        im = im.convert("RGB")
    elif mode not in _GRAY_MODES and mode != "RGB":
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
    array = np.asarray(im)
    notes["original_dtype"] = str(array.dtype.newbyteorder("="))
    if array.ndim == 2:
        array = array[..., None]
    return array, notes


def read_raster(path: Path) -> Image:
    """Read a PNG, JPEG, BMP or TIFF file.

    Grayscale (and palette images whose palette is gray) gives ``C = 1``; colour gives
    ``C = 3`` (an alpha channel is dropped and noted in ``meta["alpha_dropped"]``).
    Values are kept: 8-bit 0..255, 16-bit 0..65535, float TIFF as stored; a bilevel
    image becomes 0/255. A JPEG's EXIF orientation is applied, as a viewer would. A
    multi-page TIFF whose pages share size and mode is read as a 3D volume
    ``(C, column, row, page)``. Plain images have no physical size: spacing is 1.0.

    Returns:
        Image with array ``(C, H, W)`` (or ``(C, W, H, pages)``), affine a diagonal.

    Raises:
        DataError: corrupt, truncated or unidentifiable file, pages that differ, or an
            image larger than Pillow's decompression-bomb limit.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    what = f"{path.suffix.lstrip('.').upper() or 'raster'} image"
    pages: list[np.ndarray] = []
    with library_errors(path, what):
        try:
            with PILImage.open(path) as im:
                fmt = im.format
                n_frames = int(getattr(im, "n_frames", 1))
                for index in range(n_frames):
                    im.seek(index)
                    im.load()
                    page = ImageOps.exif_transpose(im) if fmt == "JPEG" else im
                    array, notes = _page_array(page)
                    if pages and array.shape != pages[0].shape:
                        raise DataError(
                            f"page {index} has shape {array.shape[:2]} and {array.shape[2]} "
                            f"channel(s) but page 0 has {pages[0].shape[:2]} and "
                            f"{pages[0].shape[2]}; a multi-page file is read as a volume "
                            "only when all pages match",
                            path=str(path),
                        )
                    pages.append(array)
        except PILImage.DecompressionBombError as e:
            raise DataError(
                f"image is larger than Pillow's decompression-bomb limit ({e}); if the "
                "file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS",
                path=str(path),
            ) from e
    meta: dict[str, Any] = {"format": (fmt or "").lower(), **notes}
    if len(pages) == 1:
        array = pages[0].transpose(2, 0, 1)
        return Image(array=array, spacing=(1.0, 1.0), affine=np.eye(3), path=str(path), meta=meta)
    # (pages, H, W, C) -> (C, column, row, page), the index order of 3D volumes
    volume = np.stack(pages).transpose(3, 2, 1, 0)
    meta.update(axis_order="ijk", pages=len(pages))
    return Image(array=volume, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), path=str(path), meta=meta)
