"""Resize (cropping, padding or stretching) and normalise an RGB image into one model input
(no batch axis)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .model import INTERPOLATIONS, Preprocessing


def resize_target(width: int, height: int, settings: Preprocessing) -> tuple[int, int]:
    """The (width, height) the image is resized to (see ``Preprocessing.fit``).

    "crop": the scale makes the image cover ``image_size / crop_fraction``; for a square
    input that is the classic "shorter side to size / crop_fraction". "pad": the largest
    size that fits inside ``image_size`` with the image's aspect ratio. "stretch":
    ``image_size`` itself.
    """
    out_height, out_width = settings.image_size
    if settings.fit == "stretch":
        return out_width, out_height
    if settings.fit == "pad":
        scale = min(out_height / height, out_width / width)
        return min(out_width, max(1, round(width * scale))), min(out_height, max(1, round(height * scale)))
    scale = max(out_height / height, out_width / width) / settings.crop_fraction
    # Never round below the crop size, whatever the aspect ratio.
    return max(out_width, round(width * scale)), max(out_height, round(height * scale))


def draft_size(settings: Preprocessing) -> tuple[int, int]:
    """The size JPEG draft mode must keep (both sides at least this): the largest the
    resize could ask of either side of a square-ish photo, so drafting never upsamples."""
    out_height, out_width = settings.image_size
    side = math.ceil(max(out_height, out_width) / settings.crop_fraction)
    return side, side


def preprocess(image: Image.Image, settings: Preprocessing) -> np.ndarray:
    """One float32 input tensor, (3, H, W) or (H, W, 3) as ``settings.layout`` says."""
    out_height, out_width = settings.image_size
    target = resize_target(image.width, image.height, settings)
    # reducing_gap: Pillow first shrinks by an integer factor with a box filter (fast),
    # then resamples; the result is indistinguishable at these sizes.
    resized = image.resize(target, INTERPOLATIONS[settings.interpolation], reducing_gap=3.0)
    if settings.fit == "crop":
        left = (target[0] - out_width) // 2
        top = (target[1] - out_height) // 2
        resized = resized.crop((left, top, left + out_width, top + out_height))
    pixels = np.asarray(resized, dtype=np.float32)
    if settings.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(settings.mean, dtype=np.float32)
    std = np.asarray(settings.std, dtype=np.float32)
    pixels = (pixels * np.float32(settings.pixel_scale) - mean) / std
    if pixels.shape[:2] != (out_height, out_width):  # "pad": centre it on a zero border
        canvas = np.zeros((out_height, out_width, 3), np.float32)
        top, left = (out_height - pixels.shape[0]) // 2, (out_width - pixels.shape[1]) // 2
        canvas[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
        pixels = canvas
    if settings.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)
