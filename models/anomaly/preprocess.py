"""Image -> model input, identical at training and at serving (the handler ships this very file).

The region of interest (x, y, w, h in the original image) is cropped first, then the crop is
resized to the model's square input. An image that does not fit the model raises ImageError (an HTTP 400);
decoding the bytes is the handler kit's (server/handler_kit.decode_image), at training and at serving.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INPUT_SIZE = 256


class ImageError(ValueError):
    status_code = 400


def apply_roi(img: Image.Image, roi: list[int] | None) -> Image.Image:
    if roi is None:
        return img
    x, y, w, h = roi
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > img.width or y + h > img.height:
        raise ImageError(
            f"the image is {img.width}x{img.height}; the model's region of interest {roi} (x, y, w, h) does not fit"
        )
    return img.crop((x, y, x + w, y + h))


def to_input(
    img: Image.Image, roi: list[int] | None, image_size: list[int] | None = None, size: int = INPUT_SIZE
) -> np.ndarray:
    """float32 [size, size, 3] in 0..255: check the size the model was trained on, crop the ROI, resize."""
    if image_size is not None and list(img.size) != list(image_size):
        raise ImageError(
            f"the image is {img.width}x{img.height}; this model takes {image_size[0]}x{image_size[1]} images"
        )
    crop = apply_roi(img, roi)
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float32)
