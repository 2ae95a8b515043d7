"""Which encoder writes the x4 video, with which quality, speed, pixel format, and whether the frame fits.

Every choice here is made before any frame is upscaled, so that a wrong flag or a frame the codec cannot
hold fails in a second, not after an hour of inference. Defaults (per codec, see CODECS):

- H.264 (libx264), CRF 18, preset medium: plays everywhere; CRF 18 is x264's "visually lossless" point.
- HEVC (libx265), CRF 20, preset medium: 10-bit sources and frames beyond H.264's limits.
- AV1 (libsvtav1), CRF 30, preset 8: smallest files; SVT-AV1's presets 0-13 trade speed for size.
- VP9 (libvpx-vp9), CRF 24, cpu-used 4: for .webm (8-bit only in PyAV's wheels).
- FFV1 (lossless, .mkv; .mp4 also holds it) and ProRes (.mov/.mkv, profile hq): for editing.

The default codec follows the container and the source's depth: H.264 for 8-bit sources (HEVC when the
x4 frame is beyond H.264's limits), HEVC for 10-bit sources; in .webm VP9 (8-bit) or AV1 (10-bit).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av

from core.errors import DeployError


class CodecError(DeployError):
    """A codec, quality, preset or container choice that cannot work for this video."""


@dataclass(frozen=True)
class Codec:
    """One encoder as offered by --codec. `quality`: (FFmpeg option, default, lowest, highest) of its CRF
    scale, None for codecs without one; `presets`: the names --preset accepts (an integer range for
    encoders whose presets are numbers), `preset_option` the encoder option they set. `max_size`: the
    largest width, height and pixel count the encoder (or the codec's highest level) allows."""

    name: str
    encoder: str
    title: str
    quality: tuple[str, int, int, int] | None
    presets: tuple[str, ...]
    preset_option: str | None
    default_preset: str | None
    max_size: tuple[int, int, int] | None
    limit_reason: str = ""
    min_width: int = 1
    extra: dict[str, str] = field(default_factory=dict)


_X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
_ANY_SIZE = None

CODECS = {
    c.name: c
    for c in (
        # libx264 refuses sides over 16384; level 6.2, H.264's highest, holds 139264 macroblocks (35.7 MP)
        # a frame: beyond it a stream conforms to no level and players, hardware decoders above all, refuse it.
        Codec("h264", "libx264", "H.264", ("crf", 18, 0, 51), _X26X_PRESETS, "preset", "medium",
              (16384, 16384, 139264 * 256), "16384 a side, and 35.7 megapixels at level 6.2, its highest"),
        # libx265 writes frames beyond level 6.2 as level 8.5 (unconstrained): no upper limit. Frames narrower
        # than its 64-pixel coding unit corrupt the heap (libx265 4.2 in PyAV 18.1's wheels; 48x32 aborts).
        Codec("hevc", "libx265", "HEVC", ("crf", 20, 0, 51), _X26X_PRESETS, "preset", "medium", _ANY_SIZE,
              "at least 64 pixels wide", min_width=64, extra={"x265-params": "log-level=error"}),
        Codec("av1", "libsvtav1", "AV1", ("crf", 30, 1, 63), tuple(str(i) for i in range(14)), "preset", "8",
              (16384, 8704, 16384 * 8704), "SVT-AV1 takes at most 16384 x 8704"),
        # VP9 frame headers hold 16-bit sizes.
        Codec("vp9", "libvpx-vp9", "VP9", ("crf", 24, 0, 63), tuple(str(i) for i in range(9)), "cpu-used", "4",
              (65536, 65536, 65536 * 65536), "65536 a side", extra={"b:v": "0", "row-mt": "1", "deadline": "good"}),
        Codec("ffv1", "ffv1", "FFV1 (lossless)", None, (), None, None, _ANY_SIZE, extra={"level": "3", "slicecrc": "1"}),
        Codec("prores", "prores_ks", "ProRes", None, ("proxy", "lt", "standard", "hq", "4444", "4444xq"), "profile",
              "hq", (65535, 65535, 65535 * 65535), "65535 a side"),
    )
}  # fmt: skip
ALIASES = {"libx264": "h264", "x264": "h264", "libx265": "hevc", "h265": "hevc", "x265": "hevc",
           "libsvtav1": "av1", "svtav1": "av1", "libvpx-vp9": "vp9", "prores_ks": "prores"}  # fmt: skip
# Output containers by extension: (FFmpeg muxer, default codecs for 8-bit and for deeper sources, in order).
CONTAINERS = {
    ".mp4": ("mp4", ("h264", "hevc", "av1"), ("hevc", "av1")),
    ".mov": ("mov", ("h264", "hevc", "av1"), ("hevc", "av1")),
    ".mkv": ("matroska", ("h264", "hevc", "av1"), ("hevc", "av1")),
    ".webm": ("webm", ("vp9", "av1"), ("av1",)),
}


@dataclass(frozen=True)
class EncoderPlan:
    """What the video stream is written with: the codec, its pixel format and FFmpeg options."""

    codec: Codec
    pix_fmt: str
    options: dict[str, str]

    def describe(self) -> str:
        quality = (
            f", {self.codec.quality[0]} {self.options[self.codec.quality[0]]}"
            if self.codec.quality
            else ""
        )
        speed = (
            f", {self.codec.preset_option} {self.options[self.codec.preset_option]}"
            if self.codec.preset_option
            else ""
        )
        return (
            f"{self.codec.title} ({self.codec.encoder}, {self.pix_fmt}{quality}{speed})"
        )


def container_for(suffix: str) -> str:
    """The FFmpeg muxer for an output extension; CodecError for others."""
    if suffix.lower() not in CONTAINERS:
        raise CodecError(
            f"cannot write '{suffix}' video: the output must end in {', '.join(CONTAINERS)}"
        )
    return CONTAINERS[suffix.lower()][0]


def _fits(codec: Codec, width: int, height: int) -> bool:
    if width < codec.min_width:
        return False
    return codec.max_size is None or (
        width <= codec.max_size[0]
        and height <= codec.max_size[1]
        and width * height <= codec.max_size[2]
    )


def _pick_codec(
    name: str | None,
    suffix: str,
    deep: bool,
    width: int,
    height: int,
    supported: set[str],
) -> Codec:
    held = [c for c in CODECS.values() if c.name in supported]
    if name is None:
        defaults = CONTAINERS[suffix.lower()][2 if deep else 1]
        chosen = next(
            (CODECS[c] for c in defaults if _fits(CODECS[c], width, height)),
            CODECS[defaults[0]],
        )
    else:
        key = ALIASES.get(name.lower(), name.lower())
        if key not in CODECS:
            raise CodecError(
                f"--codec {name}: unknown (choose from {', '.join(CODECS)})"
            )
        chosen = CODECS[key]
        if chosen.name not in supported:
            raise CodecError(
                f"{suffix} cannot hold {chosen.title} video (it holds {', '.join(c.name for c in held)}; .mkv holds all)"
            )
    if not _fits(chosen, width, height):
        fitting = [c.name for c in held if _fits(c, width, height)]
        raise CodecError(
            f"the x4 frame, {width}x{height}, is beyond {chosen.title}'s limits ({chosen.limit_reason}); "
            f"use --codec {' or '.join(fitting) if fitting else 'ffv1 with .mkv'}"
        )
    return chosen


def _depth(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _family(pix_fmt: str) -> str:
    fmt = av.VideoFormat(pix_fmt)
    return "rgb" if fmt.is_rgb else ("gray" if len(fmt.components) == 1 else "yuv")


def pixel_format(codec: Codec, source_fmt: str) -> str:
    """The encoder's pixel format nearest the source's: the same depth class (8 bits, or 10+ bits kept at
    10 or more), then the same family (YUV, grey, RGB), then the same chroma subsampling. No alpha: only
    colour is upscaled. CodecError when the encoder has nothing deep enough for a deep source."""
    source = av.VideoFormat(source_fmt)
    deep = _depth(source_fmt) > 8
    formats = [f.name for f in av.Codec(codec.encoder, "w").video_formats or ()]
    usable = [
        f for f in formats
        if not any(c.is_alpha for c in av.VideoFormat(f).components) and not f.startswith("yuvj")
        and (_depth(f) > 8) == deep
    ]  # fmt: skip
    if not usable:
        raise CodecError(
            f"{codec.title} ({codec.encoder}) has no {'10-bit' if deep else '8-bit'} pixel format here; "
            f"the source is {source_fmt}: use --codec {'hevc, av1 or ffv1' if deep else 'h264'}"
        )
    bare = source_fmt.replace("yuvj", "yuv")

    def distance(f: str) -> tuple:
        fmt = av.VideoFormat(f)
        return (
            f != bare,
            _family(f) != _family(bare),
            (fmt.chroma_width(64), fmt.chroma_height(64))
            != (source.chroma_width(64), source.chroma_height(64)),
            abs(_depth(f) - _depth(bare)),
            not fmt.is_planar,
        )

    return min(usable, key=distance)


def plan_encoder(
    suffix: str,
    source_fmt: str,
    width: int,
    height: int,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
) -> EncoderPlan:
    """The encoder for an x4 frame of `width` x `height` from a `source_fmt` source into a `suffix` file,
    every choice checked (container, size limits, pixel depth, quality and preset ranges)."""
    muxer = container_for(suffix)
    with av.open(
        io.BytesIO(), "w", format=muxer
    ) as probe:  # what the muxer holds, without a file
        held = {name for name in CODECS if name in probe.supported_codecs}
    chosen = _pick_codec(codec, suffix, _depth(source_fmt) > 8, width, height, held)
    options = dict(chosen.extra)
    if crf is not None and chosen.quality is None:
        why = (
            "it is lossless"
            if chosen.name == "ffv1"
            else "use --preset for its profile"
        )
        raise CodecError(f"--crf: {chosen.title} has no quality scale ({why})")
    if chosen.quality is not None:
        option, default, low, high = chosen.quality
        value = default if crf is None else crf
        if not low <= value <= high:
            raise CodecError(
                f"--crf {value}: {chosen.title} takes {low} (best) to {high} (smallest)"
            )
        options[option] = str(value)
    if preset is not None and chosen.preset_option is None:
        raise CodecError(f"--preset: {chosen.title} has no presets")
    if chosen.preset_option is not None:
        value = chosen.default_preset if preset is None else preset
        if value not in chosen.presets:
            raise CodecError(
                f"--preset {value}: {chosen.title} takes {', '.join(chosen.presets)}"
            )
        options[chosen.preset_option] = value
    return EncoderPlan(chosen, pixel_format(chosen, source_fmt), options)
