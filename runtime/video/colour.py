"""Video frames to RGB arrays for the network and back, with the matrix and range the stream declares.

The network sees full-range RGB: 8-bit sources as uint8, deeper ones (10-bit and up) as uint16, so that
10-bit video goes through the network at 16 bits. The conversion uses FFmpeg's swscale with the stream's
own matrix (BT.601, BT.709, BT.2020, ...) and range (limited or full), both ways, with accurate rounding
and full chroma interpolation. Where the stream declares no matrix, the one players assume is used
(BT.709 from 1280x720 up, BT.601 below) and then written into the output's tags: the x4 frame is HD and
would otherwise be shown as BT.709 even when its source was shown as BT.601. An undeclared range is
limited (full for the `yuvj` formats). Primaries and transfer are tags only: they are copied unchanged.

Deep YUV frames are read into planar 16-bit RGB (gbrp16le), not packed rgb48le: swscale's packed 16-bit
RGB writer with full chroma interpolation garbles every vertically subsampled source (4:2:0, 4:4:0, P010:
the 10-bit video phones and HDR cameras record), see `to_rgb`. `check_conversion` runs a test card through both
conversions of a stream before any frame is upscaled, so that a swscale that converts a format wrongly
stops the run with one line instead of writing green frames.
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
# What deep YUV frames are read into (see to_rgb); a name, so that a test can put the broken route back.
_DEEP_RGB = "gbrp16le"
# The least PSNR of the test card's round trip (check_conversion): a right conversion of any 8-bit-or-deeper
# format measures 39 dB and up on it (4:1:0 chroma is the worst), the garbled 16-bit route 12 dB.
_CARD_MIN_DB = 30.0
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
    """H x W x 3 full-range RGB, uint8 or (deep) uint16.

    Deep YUV frames go through planar gbrp16le, which PyAV's to_ndarray returns as H x W x 3 in R, G, B
    order. Not rgb48le: with SWS_FULL_CHR_H_INT (in _FLAGS), swscale writes packed 16-bit RGB with its
    yuv2rgba64_full_* functions (libswscale/output.c), and for rows whose chroma is a 2-tap vertical blend
    (packed_vscale in libswscale/vscale.c hands those to yuv2packed1 with a chroma alpha: every row but the
    first of a 4:2:0, 4:4:0 or P010 frame) chroma below its midpoint drives R, G or B towards 0: 10-bit
    4:2:0 video turned green, 11-14 dB from its source (FFmpeg 8.1 in PyAV 18.1's wheels; the first row,
    bicubic scaling and planar output are right). Planar RGB is written by yuv2gbrp16_full_X_c, which is
    right, and for 4:2:2 and 4:4:4 sources gives the very values rgb48le gave. 8-bit frames keep rgb24,
    and deep RGB sources (gbrp10/12) rgb48le: no chroma there, and swscale copies planar to packed 16-bit
    RGB with bit replication (planarRgb16ToRgb16Wrapper, libswscale/swscale_unscaled.c), losslessly both
    ways, where gbrp10le -> gbrp16le goes through its scaler and rounds (63 dB instead of lossless)."""
    yuv = colour.matrix != _RGB_MATRIX
    rgb = frame.reformat(
        format=_DEEP_RGB if colour.deep and yuv else colour.rgb_format,
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


def _test_card(deep: bool, grey: bool) -> np.ndarray:
    """64 x 32 RGB: saturated hues across, dark to light down (chroma far on both sides of its midpoint on
    every row), as uint16 when `deep`; grey formats get its grey (mean), the only thing they hold."""
    x, y = np.meshgrid(
        np.linspace(0, 6, 64, endpoint=False), np.linspace(0.15, 0.85, 32)
    )
    hue = np.stack(
        [np.clip(np.abs(((x + k) % 6) - 3) - 1, 0, 1) for k in (0, 4, 2)], axis=-1
    )
    card = y[..., None] * (0.25 + 0.75 * hue)
    if grey:
        card = np.repeat(card.mean(axis=-1, keepdims=True), 3, axis=-1)
    return np.round(card * (65535 if deep else 255)).astype(
        np.uint16 if deep else np.uint8
    )


def check_conversion(pix_fmt: str, colour: Colour) -> None:
    """ColourError when the test card, converted RGB -> `pix_fmt` -> RGB with `from_rgb` and `to_rgb`,
    comes back wrong: a swscale bug for this format and colour encoding (the packed 16-bit route of
    `to_rgb` was one) fails here, before any inference, instead of writing wrong colours with exit 0.
    Formats swscale cannot write (palettes, Bayer) and those under 8 bits are not checked."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.has_palette or fmt.is_bayer or min(c.bits for c in fmt.components) < 8:
        return
    grey = sum(1 for c in fmt.components if not c.is_alpha) == 1
    card = _test_card(colour.deep, grey)
    try:
        frame = from_rgb(card, colour, pix_fmt)
    except (
        OSError,
        ValueError,
    ):  # av.error.FFmpegError is an OSError: swscale does not write it
        return
    back = to_rgb(frame, colour).astype(np.float64)
    peak = 65535.0 if colour.deep else 255.0
    mse = float(np.mean((back - card) ** 2)) / peak**2
    db = float("inf") if mse == 0 else -10 * np.log10(mse)
    if db < _CARD_MIN_DB:
        raise ColourError(
            f"{pix_fmt} ({colour.describe()}): this FFmpeg converts it wrongly ({db:.0f} dB on a test card); "
            f"convert the video to yuv444p10le first"
        )
