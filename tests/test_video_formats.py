"""Every pixel format family users meet goes through `upscale_video` with its colours, depth and tags,
and a rotated clip keeps its rotation.

The format matrix is generated from families: 8, 10 and 12 bits x 4:2:0, 4:2:2 and 4:4:4 YUV, each in
limited and full range, the `yuvj` (JPEG) formats, planar and packed RGB, NV12 and grey. For each, a
3-frame clip of a real photo (scikit-image's astronaut) is written losslessly where an encoder here can
(FFV1; raw video where FFV1 does not take the format; MJPEG for `yuvj`), upscaled x4 with a
nearest-neighbour stand-in for the network and written losslessly (FFV1). Both files are then read back
by the BT.601/709/2020 formulas in numpy (`reference_rgb`, no swscale), and the output, area-averaged back
to the source size, is compared with the source: nearest x4 then a 4x4 area average is the identity, so
what is left is the colour conversion of the program (YUV -> RGB -> YUV at 4x).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import DeployError
from runtime.settings import Settings
from runtime.video import colour as colour_module
from runtime.video.colour import Colour, ColourError, check_conversion, to_rgb
from runtime.video.upscale import upscale_video

# 64 wide: libx265 refuses narrower frames (runtime/video/codecs.py).
WIDTH, HEIGHT, FRAMES = 64, 48, 3
BT601, BT709, BT2020 = 6, 1, 9
LIMITED, FULL = 1, 2  # AVColorRange
# (Kr, Kb) of each AVColorSpace the tests write: ITU-T H.273 table 4.
KR_KB = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593)}
# Where two components share a plane (semi-planar): is V first (NV21, NV42)?
_V_FIRST = {"nv21": True, "nv42": True}
# Packed RGB formats the outputs can be in: the sample of R, G and B within a pixel, and samples a pixel.
_PACKED_RGB = {
    "rgb24": ((0, 1, 2), 3),
    "bgr24": ((2, 1, 0), 3),
    "bgr0": ((2, 1, 0), 4),
    "rgb0": ((0, 1, 2), 4),
    "rgb48le": ((0, 1, 2), 3),
}
FFV1_FORMATS = {f.name for f in av.Codec("ffv1", "w").video_formats}


class NearestX4:
    """Stand-in for the network: nearest-neighbour x4 (uint8 or uint16), undone exactly by a 4x4 area mean."""

    max_pixels = 10**8
    settings = Settings(max_pixels=max_pixels)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.repeat(4, axis=0).repeat(4, axis=1)


def photo(count: int = FRAMES) -> list[np.ndarray]:
    """A slow pan over the astronaut photo shrunk 4x (128 x 128), WIDTH x HEIGHT RGB frames."""
    from skimage import data

    small = (
        data.astronaut()[:, :, :3]
        .astype(np.float64)
        .reshape(128, 4, 128, 4, 3)
        .mean(axis=(1, 3))
    )
    small = small.round().astype(np.uint8)
    return [
        np.ascontiguousarray(small[20 + i : 20 + i + HEIGHT, 30 + i : 30 + i + WIDTH])
        for i in range(count)
    ]


def _samples(frame: av.VideoFrame, index: int, per_pixel: int = 1) -> np.ndarray:
    """Plane `index` as H x W (x per_pixel) samples, line padding cut off; 2-byte samples above 8 bits."""
    plane = frame.planes[index]
    wide = max(c.bits for c in frame.format.components) > 8
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(
        plane.height, plane.line_size
    )
    data = np.ascontiguousarray(
        rows[:, : (2 if wide else 1) * per_pixel * plane.width]
    ).view("<u2" if wide else np.uint8)
    return data.reshape(plane.height, plane.width, per_pixel) if per_pixel > 1 else data


def components(frame: av.VideoFrame) -> tuple[list[np.ndarray], int]:
    """The frame's colour components (Y, Cb, Cr or R, G, B; grey: Y) as float code values at full size
    (subsampled chroma repeated, not interpolated), and their bit depth. Read from the planes, no swscale."""
    fmt = frame.format
    bits = max(c.bits for c in fmt.components)
    name = fmt.name
    if name in _PACKED_RGB:
        order, step = _PACKED_RGB[name]
        packed = _samples(frame, 0, step).astype(np.float64)
        chans = [packed[..., i] for i in order]
    else:
        colour = [c for c in fmt.components if not c.is_alpha][:3]
        chans, seen = [], {}
        for comp in colour:
            sharing = sum(1 for c in colour if c.plane == comp.plane)
            samples = _samples(frame, comp.plane, sharing).astype(np.float64)
            if sharing > 1:  # semi-planar: Cb Cr interleaved (Cr Cb in NV21, NV42)
                k = seen[comp.plane] = seen.get(comp.plane, -1) + 1
                samples = samples[..., 1 - k if _V_FIRST.get(name) else k]
            chans.append(samples)
        if name.startswith(("p0", "p2", "p4")):  # P010 & co: bits at the top
            chans = [np.floor(c / (1 << (16 - bits))) for c in chans]
    out = []
    for c in chans:
        ry, rx = -(-frame.height // c.shape[0]), -(-frame.width // c.shape[1])
        out.append(
            c.repeat(ry, axis=0).repeat(rx, axis=1)[: frame.height, : frame.width]
        )
    return out, bits


def reference_rgb(frame: av.VideoFrame, matrix: int, full: bool) -> np.ndarray:
    """H x W x 3 RGB in [0, 1] by the formulas of ITU-T H.273 (8.2 range, 8.3 matrix), no swscale."""
    chans, bits = components(frame)
    peak = (1 << bits) - 1
    if frame.format.is_rgb:
        return np.stack(chans, axis=-1) / peak
    scale = 1 << (bits - 8)
    if len(chans) == 1:
        y = chans[0] / peak if full else (chans[0] - 16 * scale) / (219 * scale)
        return np.clip(np.repeat(y[..., None], 3, axis=-1), 0, 1)
    y, cb, cr = chans
    if full:
        y, cb, cr = (
            y / peak,
            (cb - (1 << (bits - 1))) / peak,
            (cr - (1 << (bits - 1))) / peak,
        )
    else:
        y, cb, cr = (
            (y - 16 * scale) / (219 * scale),
            (cb - 128 * scale) / (224 * scale),
            (cr - 128 * scale) / (224 * scale),
        )
    kr, kb = KR_KB[matrix]
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    return np.clip(
        np.stack([r, (y - kr * r - kb * b) / (1 - kr - kb), b], axis=-1), 0, 1
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def area_x4(rgb: np.ndarray) -> np.ndarray:
    """The mean of each 4x4 block: the inverse of the stand-in's nearest x4."""
    h, w, c = rgb.shape
    return rgb.reshape(h // 4, 4, w // 4, 4, c).mean(axis=(1, 3))


def writer_for(pix_fmt: str) -> tuple[str, str]:
    """(encoder, suffix) that stores `pix_fmt` so that it decodes as `pix_fmt` again: FFV1 where it takes
    the format (lossless), MJPEG for the JPEG `yuvj` formats (what webcams write), raw video otherwise
    (Matroska keeps NV12's fourcc and the colour tags; NUT holds packed and planar RGB)."""
    if pix_fmt in FFV1_FORMATS:
        return "ffv1", ".mkv"
    if pix_fmt.startswith("yuvj"):
        return "mjpeg", ".mkv"
    return "rawvideo", ".mkv" if pix_fmt.startswith("nv") else ".nut"


def make_source(path: Path, pix_fmt: str, matrix: int, full: bool, *, codec: str | None = None,
                options: dict | None = None, rotation: tuple[int, bool] | None = None,
                count: int = FRAMES) -> Path:  # fmt: skip
    """A clip of the photo pan in `pix_fmt`, converted from RGB with `matrix` and range and tagged so
    (primaries and transfer: BT.2020/PQ for BT.2020, else BT.709), at 25 fps; `rotation` (degrees
    counter-clockwise, horizontal flip) sets a display matrix."""
    codec = codec or writer_for(pix_fmt)[0]
    is_rgb = av.VideoFormat(pix_fmt).is_rgb
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.codec_context.time_base = Fraction(1, 25)
        ctx = stream.codec_context
        ctx.colorspace = 0 if is_rgb else matrix
        ctx.color_range = FULL if full else LIMITED
        ctx.color_primaries, ctx.color_trc = (9, 16) if matrix == BT2020 else (1, 1)
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        for i, rgb in enumerate(photo(count)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=None if is_rgb else matrix, src_color_range=FULL,
                dst_color_range=FULL if full else LIMITED,
            )  # fmt: skip
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def frames_of(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def tags(path: Path) -> tuple[int, int, int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return (
            int(ctx.colorspace),
            int(ctx.color_range),
            int(ctx.color_primaries),
            int(ctx.color_trc),
        )


def bits_of(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _cases() -> list[tuple[str, bool]]:
    """(pix_fmt, full range) by family; the JPEG formats and RGB are full range by definition."""
    yuv = [f"yuv{s}p{d}" for d in ("", "10le", "12le") for s in ("420", "422", "444")]
    cases = [
        (f, full) for f in yuv + ["nv12", "gray", "gray10le"] for full in (False, True)
    ]
    cases += [("yuvj420p", True), ("yuvj422p", True)]
    cases += [(f, True) for f in ("gbrp", "gbrp10le", "gbrp12le", "rgb24")]
    return cases


# Deep YUV is written as BT.2020 (what phones and HDR cameras record), 8-bit YUV as BT.709.
def _matrix(pix_fmt: str) -> int:
    if pix_fmt.startswith("yuvj"):
        return BT601  # JFIF is BT.601 full range
    return BT2020 if bits_of(pix_fmt) > 8 else BT709


# The bound: nearest x4 and the 4x4 mean cancel, so the output differs from the source only by the colour
# conversion: swscale's bilinear chroma (the reference repeats chroma samples), rounding to the output's
# grid and the 4:2:0/4:2:2 chroma of the x4 frame. These measure 40.5-42 dB on this busy photo (4:4:4:
# 48 dB and up; RGB: lossless); 35 dB leaves room for other FFmpeg builds. A wrong matrix, range or chroma
# reading (the green 10/12-bit 4:2:0 frames this file was written for measured 13-14 dB) is far below it.
MIN_PSNR = 35.0


@pytest.mark.parametrize(
    ("pix_fmt", "full"),
    _cases(),
    ids=lambda v: v if isinstance(v, str) else ("full" if v else "limited"),
)
def test_formats_keep_colours_depth_and_tags(
    tmp_path: Path, pix_fmt: str, full: bool
) -> None:
    matrix = _matrix(pix_fmt)
    source = make_source(
        tmp_path / f"source{writer_for(pix_fmt)[1]}", pix_fmt, matrix, full
    )
    src_frames = frames_of(source)
    assert src_frames[0].format.name == pix_fmt, (
        "the clip must decode in the format under test"
    )
    target = tmp_path / "x4.mkv"
    result = upscale_video(source, target, NearestX4(), codec="ffv1", progress=False)
    out_frames = frames_of(target)
    assert result.frames == FRAMES == len(out_frames)
    deep = bits_of(pix_fmt) > 8
    # Depth: deep sources go through the network at 16 bits and come out at their own depth.
    assert ("16-bit" in result.colour) == deep
    out_fmt = out_frames[0].format
    assert bits_of(out_fmt.name) == bits_of(pix_fmt), (pix_fmt, out_fmt.name)
    assert out_fmt.is_rgb == av.VideoFormat(pix_fmt).is_rgb
    # Tags: the source's matrix, range, primaries and transfer (RGB: the RGB "matrix").
    out_tags = tags(target)
    if out_fmt.is_rgb:
        assert out_tags[0] == 0
    else:
        assert out_tags[:2] == (matrix, FULL if full else LIMITED), out_tags
        if writer_for(pix_fmt)[0] != "mjpeg":
            assert out_tags == tags(source)
    # Pixels: the output, read by the formulas and area-averaged x1/4, against the source read the same way.
    for src, out in zip(src_frames, out_frames):
        expected = reference_rgb(src, matrix, full)
        got = area_x4(reference_rgb(out, out_tags[0] or matrix, out_tags[1] == FULL))
        assert (out.width, out.height) == (4 * WIDTH, 4 * HEIGHT)
        value = psnr(got, expected)
        assert value > MIN_PSNR, (
            f"{pix_fmt} {'full' if full else 'limited'}: {value:.1f} dB"
        )
        # RGB to RGB, losslessly, through a stand-in the area mean undoes: nothing changes.
        if out_fmt.is_rgb:
            assert np.abs(got - expected).max() < 1e-9, f"{pix_fmt}: {value:.1f} dB"


@pytest.mark.parametrize(
    ("codec", "suffix", "options", "min_psnr"),
    [
        # HEVC Main10 from a phone (written losslessly here) into .mp4, out through the default there
        # (HEVC, CRF 20): the x4 frame is lossy, 37.4 dB; 33 dB is far above the 13 dB of green frames.
        ("libx265", ".mp4", {"x265-params": "log-level=error:lossless=1"}, 33.0),
        # AV1 10-bit (SVT-AV1, lossy) into .webm, out through the default there (AV1, CRF 30): 39.0 dB
        # against the decoded source.
        ("libsvtav1", ".webm", {"preset": "12"}, 30.0),
    ],
)
def test_ten_bit_phone_video_through_the_default_codecs(
    tmp_path, codec, suffix, options, min_psnr
) -> None:
    source = make_source(
        tmp_path / f"phone{suffix}",
        "yuv420p10le",
        BT2020,
        False,
        codec=codec,
        options=options,
    )
    target = tmp_path / f"phone_x4{suffix}"
    result = upscale_video(source, target, NearestX4(), progress=False)
    assert "16-bit" in result.colour
    out_frames = frames_of(target)
    assert out_frames[0].format.name == "yuv420p10le", "10-bit in, 10-bit out"
    assert tags(target)[:2] == tags(source)[:2] == (BT2020, LIMITED)
    for src, out in zip(frames_of(source), out_frames):
        value = psnr(
            area_x4(reference_rgb(out, BT2020, False)),
            reference_rgb(src, BT2020, False),
        )
        assert value > min_psnr, f"{codec}: {value:.1f} dB"


# Formats no encoder here writes in a file that decodes as them (hardware decoders' P010, NV16/NV20,
# the odd subsamplings, 9/14/16-bit, alpha): the frame reader alone, against the formulas. Right readings
# measure 39 dB (4:1:0, whose chroma the reference repeats 4x where swscale interpolates) to 77 dB;
# MIN_PSNR as above.
FRAME_FORMATS = [
    "p010le",
    "p016le",
    "p210le",
    "p410le",
    "nv21",
    "nv16",
    "nv20le",
    "yuv440p",
    "yuv440p10le",
    "yuv411p",
    "yuv410p",
    "yuv420p9le",
    "yuv420p14le",
    "yuv420p16le",
    "yuva420p10le",
    "yuva444p12le",
]


@pytest.mark.parametrize("pix_fmt", FRAME_FORMATS)
@pytest.mark.parametrize("full", [False, True], ids=["limited", "full"])
def test_frames_of_other_formats_read_right(pix_fmt: str, full: bool) -> None:
    rgb = photo(1)[0]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format=pix_fmt,
        dst_colorspace=BT709,
        src_color_range=FULL,
        dst_color_range=FULL if full else LIMITED,
    )
    deep = bits_of(pix_fmt) > 8
    got = to_rgb(frame, Colour(BT709, full, 1, 1, deep)).astype(np.float64) / (
        65535 if deep else 255
    )
    value = psnr(got, reference_rgb(frame, BT709, full))
    assert value > MIN_PSNR, (
        f"{pix_fmt} {'full' if full else 'limited'}: {value:.1f} dB"
    )


def test_a_broken_conversion_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    """The check at the start of every video: swscale's packed 16-bit RGB writer with full chroma
    interpolation (the route that turned 10-bit 4:2:0 green) is caught, and the run stops with one line."""
    source = make_source(tmp_path / "deep.mkv", "yuv420p10le", BT2020, False)
    colour = Colour(BT2020, False, 9, 16, True)
    check_conversion("yuv420p10le", colour)  # the route in use passes
    monkeypatch.setattr(colour_module, "_DEEP_RGB", "rgb48le")
    with pytest.raises(ColourError, match="yuv420p10le"):
        check_conversion("yuv420p10le", colour)
    with pytest.raises(DeployError) as caught:
        upscale_video(
            source, tmp_path / "x4.mkv", NearestX4(), codec="ffv1", progress=False
        )
    assert "\n" not in str(caught.value) and not (tmp_path / "x4.mkv").exists()


def display_matrix(frame: av.VideoFrame) -> list[int] | None:
    data = frame.side_data.get("DISPLAYMATRIX")
    return None if data is None else np.frombuffer(bytes(data), np.int32).tolist()


@pytest.mark.parametrize(
    ("suffix", "codec", "rotation"),
    [
        # A phone held upright: 90 degrees in the MP4 track header.
        (".mp4", "libx264", (90, False)),
        # Turned and mirrored (a front camera): Matroska's projection pose.
        (".mkv", "ffv1", (270, True)),
        # None: the output gets none either.
        (".mov", "libx264", None),
    ],
)
def test_rotation_is_kept_not_applied(tmp_path, suffix, codec, rotation) -> None:
    source = make_source(
        tmp_path / f"phone{suffix}",
        "yuv420p",
        BT709,
        False,
        codec=codec,
        rotation=rotation,
    )
    target = tmp_path / f"phone_x4{suffix}"
    upscale_video(source, target, NearestX4(), progress=False)
    src_frames, out_frames = frames_of(source), frames_of(target)
    assert (display_matrix(src_frames[0]) is None) == (rotation is None)
    for src, out in zip(src_frames, out_frames):
        # The same display matrix: players turn (and mirror) the x4 video as the source ...
        assert (
            display_matrix(out) == display_matrix(src) and out.rotation == src.rotation
        )
        # ... and the pixels are stored as in the source, not turned (which would turn them twice).
        assert (out.width, out.height) == (4 * src.width, 4 * src.height)
        value = psnr(
            area_x4(reference_rgb(out, BT709, False)), reference_rgb(src, BT709, False)
        )
        # Through the default H.264 at CRF 18: 38-40 dB.
        assert value > 30.0, f"{value:.1f} dB"
