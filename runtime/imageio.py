"""Read and write images with OpenCV, keeping what the file says: bit depth (by dtype, never by pixel
values), greyscale, alpha, and EXIF orientation; RGB order inside the program, BGR only at OpenCV's edge.

Files are read with IMREAD_UNCHANGED (the only mode that keeps alpha and 16 bits), which ignores EXIF
orientation, so the orientation tag is read from the metadata and applied here. Writing is atomic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from export.errors import DeployError
from export.fileutil import atomic_path

READABLE = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".webp", ".bmp"}
NO_ALPHA = {".jpg", ".jpeg", ".bmp"}
_ORIENTATION_TAG = 0x0112


class ImageError(DeployError):
    """An image that cannot be read or written; the message names the file."""


@dataclass
class Image:
    """Pixels in RGB order: `colour` is H x W x 3 or H x W (greyscale); `alpha` is H x W or None."""

    colour: np.ndarray
    alpha: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.colour.dtype

    @property
    def is_grey(self) -> bool:
        return self.colour.ndim == 2


def exif_orientation(exif: bytes) -> int:
    """The orientation (1-8) in a TIFF-structured EXIF block, 1 when absent or unreadable."""
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", exif, 4)
    if ifd + 2 > len(exif):
        return 1
    (count,) = struct.unpack_from(order + "H", exif, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(exif):
            break
        tag, kind = struct.unpack_from(order + "HH", exif, entry)
        if tag == _ORIENTATION_TAG and kind == 3:
            (value,) = struct.unpack_from(order + "H", exif, entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels the way EXIF orientation says they are to be shown."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    turn = transforms.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def read_image(path: str | Path) -> Image:
    """Decode an image file; ImageError with the cause for anything that is not a readable image."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    if path.suffix.lower() not in READABLE:
        raise ImageError(f"{path}: unsupported file type '{path.suffix}' (supported: {', '.join(sorted(READABLE))})")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        pixels, kinds, blocks = cv2.imreadWithMetadata(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"{path}: cannot decode ({str(exc).strip().splitlines()[-1]})") from None
    if pixels is None or pixels.size == 0:
        raise ImageError(f"{path}: cannot decode: truncated, corrupt or not a {path.suffix} image")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: {pixels.dtype} samples are not supported (8- or 16-bit integer images only)")
    orientation = 1
    for kind, block in zip(np.ravel(kinds) if kinds is not None else [], blocks or ()):
        if kind == cv2.IMAGE_METADATA_EXIF:
            orientation = exif_orientation(np.asarray(block, np.uint8).tobytes())
    pixels = apply_orientation(pixels, orientation)
    if pixels.ndim == 2:
        return Image(pixels)
    channels = pixels.shape[2]
    if channels == 1:
        return Image(pixels[..., 0])
    if channels == 2:
        return Image(np.ascontiguousarray(pixels[..., 0]), np.ascontiguousarray(pixels[..., 1]))
    colour = np.ascontiguousarray(pixels[..., 2::-1])
    return Image(colour, np.ascontiguousarray(pixels[..., 3]) if channels == 4 else None)


def write_image(path: str | Path, image: Image, quality: int = 95) -> None:
    """Encode atomically (temporary file in the target folder, then rename): never a partial file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ImageError(f"{path}: cannot write '{path.suffix}' files (supported: {', '.join(sorted(READABLE))})")
    if image.dtype == np.uint16 and suffix in EIGHT_BIT_ONLY:
        raise ImageError(f"{path}: {suffix} stores 8-bit samples only; write 16-bit images as .png or .tiff")
    if image.alpha is not None and suffix in NO_ALPHA:
        raise ImageError(f"{path}: {suffix} cannot store the alpha channel; write as .png, .webp or .tiff")
    colour = image.colour if image.is_grey else image.colour[..., ::-1]
    if image.alpha is not None:
        bgr = np.repeat(colour[..., None], 3, axis=2) if image.is_grey else colour
        data = np.dstack([bgr, image.alpha])
    else:
        data = colour
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality]}
    if suffix == ".webp":
        params[suffix] = [cv2.IMWRITE_WEBP_QUALITY, 101]
    if not path.parent.is_dir():
        raise ImageError(f"{path}: output folder does not exist")
    try:
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(data), params.get(suffix, [])):
                raise ImageError(f"{path}: OpenCV could not encode the image")
    except PermissionError:
        raise ImageError(f"{path}: permission denied (output folder not writable)") from None
    except cv2.error as exc:
        raise ImageError(f"{path}: cannot encode ({str(exc).strip().splitlines()[-1]})") from None
