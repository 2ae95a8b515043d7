"""Video frames to RGB arrays for the network and back, with the matrix and range the stream declares.

The network sees full-range RGB: 8-bit sources as uint8, deeper ones (10-bit and up) as uint16, so that
10-bit video goes through the network at 16 bits. The conversion uses FFmpeg's swscale with the stream's
own matrix (BT.601, BT.709, BT.2020, ...) and range (limited or full), both ways, with accurate rounding
and full chroma interpolation. Where the stream declares no matrix, the one players assume is used
(BT.709 from 1280x720 up, BT.601 below) and then written into the output's tags: the x4 frame is HD and
would otherwise be shown as BT.709 even when its source was shown as BT.601. An undeclared range is
limited (full for the `yuvj` formats). Primaries and transfer are tags only: they are copied unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Interpolation

from core.errors import DeployError

UNSPECIFIED = 2  # AVCOL_SPC/AVCOL_PRI/AVCOL_TRC_UNSPECIFIED
BT709, BT470BG, SMPTE170M, BT2020_NCL = 1, 5, 6, 9
# Matrices swscale converts with (AVColorSpace values), by name for messages.
MATRICES = {
    1: "BT.709",
    4: "FCC",
    5: "BT.601",
    6: "BT.601",
    7: "SMPTE 240M",
    9: "BT.2020",
}
_RGB_MATRIX = 0
_FLAGS = (
    Interpolation.BILINEAR
    | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)


class ColourError(DeployError):
    """A colour encoding this program cannot convert correctly."""


@dataclass(frozen=True)
class Colour:
    """How a stream's pixels map to RGB: `matrix` (AVColorSpace), `full_range`, the primaries and transfer
    tags carried over, and `deep` (more than 8 bits: the network runs at 16 bits)."""

    matrix: int
    full_range: bool
    primaries: int
    trc: int
    deep: bool

    @property
    def rgb_format(self) -> str:
        return "rgb48le" if self.deep else "rgb24"

    @property
    def range(self) -> ColorRange:
        return ColorRange.JPEG if self.full_range else ColorRange.MPEG

    def describe(self) -> str:
        name = "RGB" if self.matrix == _RGB_MATRIX else MATRICES[self.matrix]
        return f"{name}, {'full' if self.full_range else 'limited'} range, {'16' if self.deep else '8'}-bit RGB"


def stream_colour(stream: av.video.stream.VideoStream) -> Colour:
    """The colour encoding of a video stream, from its declared tags (the rules above where it has none)."""
    ctx = stream.codec_context
    fmt = av.VideoFormat(ctx.pix_fmt)
    deep = max(c.bits for c in fmt.components) > 8
    if fmt.is_rgb:
        return Colour(
            _RGB_MATRIX, True, int(ctx.color_primaries), int(ctx.color_trc), deep
        )
    matrix = int(ctx.colorspace)
    if matrix == UNSPECIFIED:
        matrix = BT709 if ctx.width >= 1280 or ctx.height >= 720 else SMPTE170M
    if matrix not in MATRICES:
        raise ColourError(
            f"colour matrix {ctx.colorspace} (AVColorSpace {matrix}) is not one swscale converts"
        )
    declared = int(ctx.color_range)
    full = declared == ColorRange.JPEG or (
        declared == ColorRange.UNSPECIFIED and ctx.pix_fmt.startswith("yuvj")
    )
    return Colour(matrix, full, int(ctx.color_primaries), int(ctx.color_trc), deep)


def output_colour(colour: Colour, pix_fmt: str) -> Colour:
    """The colour encoding of the output: the source's, except that RGB sources written as YUV (an encoder
    without RGB formats) get BT.709 limited range, the HD default."""
    if colour.matrix == _RGB_MATRIX and not av.VideoFormat(pix_fmt).is_rgb:
        return Colour(BT709, False, colour.primaries, colour.trc, colour.deep)
    return colour


def to_rgb(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """H x W x 3 full-range RGB, uint8 or (deep) uint16."""
    rgb = frame.reformat(
        format=colour.rgb_format,
        src_colorspace=colour.matrix or None,
        src_color_range=colour.range,
        dst_color_range=ColorRange.JPEG,
        interpolation=_FLAGS,
    )
    return rgb.to_ndarray()


def from_rgb(rgb: np.ndarray, colour: Colour, pix_fmt: str) -> av.VideoFrame:
    """A frame in `pix_fmt` from full-range RGB, in the stream's matrix and range, tagged with them."""
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(rgb), format=colour.rgb_format
    )
    out = frame.reformat(
        format=pix_fmt,
        dst_colorspace=colour.matrix or None,
        src_color_range=ColorRange.JPEG,
        dst_color_range=colour.range,
        interpolation=_FLAGS,
    )
    tag(out, colour)
    return out


def tag(
    target: av.VideoFrame | av.video.codeccontext.VideoCodecContext, colour: Colour
) -> None:
    """Write the colour tags onto a frame or an encoder (swscale leaves a frame's tags unreliable)."""
    target.colorspace = colour.matrix
    target.color_range = colour.range
    target.color_primaries = colour.primaries
    target.color_trc = colour.trc
