"""Turn any supported input (path, bytes, PIL image, uint8 array) into an upright RGB image.

Every failure is an :class:`ImageDecodeError` whose message is a short, human reason
("empty file", "truncated image", "not an image", "is a directory", ...), so a caller
embedding a folder can record it and move on. Nothing here can block: files are opened
non-blocking and read only when ``fstat`` of the open descriptor says they are regular
(a FIFO would wait forever for a writer), each file is read once, and the pixel count is
checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import errno
import io
import os
import stat

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Transparent pixels are composited on white: the usual look of a logo or icon on a page,
# and what a user sees in a file browser.
TRANSPARENCY_BACKGROUND = (255, 255, 255)

class ImageDecodeError(Exception):
    """An input that cannot be turned into an image; the message is the reason."""


def describe_source(source) -> str:
    """A short label for an input in error messages (a path, or the kind of object)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return f"<{type(source).__name__}>"


def load_rgb(source, *, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``source`` to an upright ``RGB`` PIL image, or raise :class:`ImageDecodeError`.

    ``draft_size`` lets JPEG decoding scale down by a power of two while keeping both sides
    at least that large (much faster for big photos). ``max_pixels`` refuses images whose
    header claims more pixels (decompression bombs) before decoding them.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        _check_pixel_count(source, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("empty input")
        return _decode(io.BytesIO(source), max_pixels, draft_size)
    if isinstance(source, (str, os.PathLike)):
        return _decode(io.BytesIO(read_image_file(source)), max_pixels, draft_size)
    raise ImageDecodeError(
        f"unsupported input type {type(source).__name__}; "
        "expected a path, bytes, a PIL image or a uint8 array"
    )


def read_image_file(path) -> bytes:
    """The bytes of the regular file at ``path``, read once, or :class:`ImageDecodeError`.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so
    a file swapped for a FIFO (or a device) after a directory listing is refused, never
    waited on: the check and the read concern the same file.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ImageDecodeError("symlink loop (too many levels of symbolic links)") from None
        if error.errno == errno.EISDIR:
            raise ImageDecodeError("is a directory") from None
        raise ImageDecodeError(f"cannot open: {error.strerror or error}") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError("is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError("not a regular file")
        if info.st_size == 0:
            raise ImageDecodeError("empty file")
        os.set_blocking(descriptor, True)  # a regular file: plain reads from here on
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            data = file.read()
    except OSError as error:
        raise ImageDecodeError(f"cannot read: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
    if not data:
        raise ImageDecodeError("empty file")
    return data


def _decode(file, max_pixels: int, draft_size) -> Image.Image:
    try:
        image = Image.open(file)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"cannot read image header: {error}") from None
    with image:
        _check_pixel_count(image, max_pixels)
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        try:
            # An animated file (GIF, APNG, WebP) is embedded by its first frame, where
            # Image.open leaves it.
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except ImageDecodeError:
            raise
        except OSError as error:
            if "truncated" in str(error):
                raise ImageDecodeError("truncated image") from None
            raise ImageDecodeError(f"corrupt image: {error}") from None
        except (SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise ImageDecodeError(f"corrupt image: {error}") from None


def _check_pixel_count(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
            f"max_pixels={max_pixels}"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert every Pillow mode to RGB deliberately rather than trusting ``convert``."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, TRANSPARENCY_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "HSV"):
        # CMYK: Pillow undoes Adobe's inverted CMYK JPEGs while decoding, so a plain
        # conversion gives the colours a viewer shows.
        return image.convert("RGB")
    raise ImageDecodeError(f"unsupported image mode {mode!r}")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float grayscale to 8-bit RGB.

    Pillow's own I;16 -> L conversion clips at 255 instead of scaling. 16-bit data keeps
    its top 8 bits (the full 0..65535 range maps to 0..255); 32-bit integer data is treated
    as 16-bit when it exceeds 255 (how PNG and TIFF scans arrive), and float data in
    [0, 1] is scaled by 255.
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F" and values.size and np.nanmax(values) <= 1.0:
        values = values * 255.0
    elif image.mode.startswith("I;16") or (values.size and values.max() > 255):
        values = values / 257.0
    gray = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageDecodeError(
            f"arrays must be uint8 (got {array.dtype}); scale float images to 0..255 "
            "and convert with array.astype(numpy.uint8)"
        )
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(array), "RGB")
    if array.ndim == 3 and array.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    raise ImageDecodeError(
        f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) RGB "
        "or (H, W, 4) RGBA"
    )
