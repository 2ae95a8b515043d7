"""Upscale a video x4 through PyAV (FFmpeg inside its wheels): `upscale.py clip.mp4 clip_x4.mp4`.

The first video stream is decoded, each frame converted to RGB with the stream's declared colour encoding
(runtime/video/colour.py), upscaled, converted back and encoded (runtime/video/codecs.py chooses the
encoder); audio, subtitle and attachment streams are copied packet for packet (remuxed, not re-encoded)
where the output container can hold them, and named as left out otherwise. Timing is kept exactly: every
frame keeps its timestamp and duration in the source's time base (variable frame rate too). A rotation
(the display matrix a phone writes) is kept as the output's display matrix, not applied to the pixels, so
players turn the x4 video as they turned the source. Decoding, inference and encoding overlap with
bounded queues between them (runtime/jobs/channel.py).

Everything that can be checked is checked before the first frame is upscaled: the output container,
codec, quality and preset, the codec's size limits for the x4 frame, memory. The output is written to a
temporary file and renamed at the end, so an error, Ctrl-C or SIGTERM leaves no partial file; a damaged
or truncated source is an error that names the frame where it broke.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from core.descriptor import SCALE
from core.errors import VideoError
from core.files import atomic_path
from core.vocabulary import VIDEO_SUFFIXES
from runtime.jobs.channel import QUEUE_ITEMS, Channel, Timer, run_stages
from runtime.jobs.step import check_output
from runtime.memory import available_bytes, gib
from runtime.upscaler import Upscaler
from runtime.video.codecs import (  # noqa: F401 - CONTAINERS: what the video path writes, for its callers
    CONTAINERS,
    EncoderPlan,
    container_for,
    plan_encoder,
)
from runtime.video.colour import (
    Colour,
    check_conversion,
    from_rgb,
    output_colour,
    stream_colour,
    tag,
    to_rgb,
)

# What FFmpeg demuxes and people call a video file; any of them is read, only CONTAINERS are written.
# Frames an encoder holds at most (x264/x265 lookahead 40 at preset medium, B-frames, frame threads).
_ENCODER_FRAMES = 48
# The display matrix that turns nothing (libavutil/display.h: 16.16 fixed point, the last column 2.30).
_IDENTITY = [1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30]
_STALE_TAGS = {"encoder", "duration", "number_of_frames", "number_of_bytes", "bps", "_statistics_tags",
               "_statistics_writing_app", "_statistics_writing_date_utc"}  # fmt: skip



@dataclass
class VideoResult:
    """What `upscale_video` wrote: `frames` upscaled, the encoder and colour used, the streams copied and
    those left out (with why), and busy seconds per stage ('decode', 'inference', 'encode') and in all."""

    target: Path
    frames: int
    encoder: str
    colour: str
    copied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    skipped: bool = False  # the target was already a complete result: left as it was (a re-run resumes)


def is_video(path: str | Path) -> bool:
    """Whether `path` names a video by its extension (what upscale.py routes to `upscale_video`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _check_target(source: Path, target: Path, overwrite: bool) -> bool:
    """The rules of image outputs (runtime/jobs/step.py check_output), for video: an earlier result is a video 4x
    the source's frame size. Returns `replace`."""
    container_for(target.suffix)
    return check_output(source, target, overwrite, {source.resolve()}, is_result=is_result)


def check_scale(source: Path, outscale: float) -> None:
    """VideoError unless `outscale` is the network's own x4: frames are not resized."""
    if outscale != SCALE:
        raise VideoError(f"{source}: --outscale {outscale:g}: videos are upscaled x{SCALE} only")


def is_result(source: Path, target: Path) -> bool:
    """Whether `target` is a complete x4 result of `source`: it decodes, at 4x the source's frame size."""
    size = _frame_size(source)
    return size is not None and _frame_size(target) == (size[0] * SCALE, size[1] * SCALE)


def _frame_size(path: Path) -> tuple[int, int] | None:
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            return stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, VideoError):
        return None


def _open(source: Path) -> av.container.InputContainer:
    if not source.is_file():
        raise VideoError(f"{source}: no such file")
    try:
        return av.open(str(source), "r")
    except av.error.FFmpegError as exc:
        raise VideoError(
            f"{source}: not a readable video, or damaged or truncated ({exc.strerror or exc})"
        ) from None


def _video_stream(
    container: av.container.InputContainer, source: Path
) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoError(f"{source}: has no video stream (an audio-only file?)")


def _declared_end(stream: av.video.stream.VideoStream) -> Fraction | None:
    """When the container says the video stream ends, in seconds, if it says."""
    if stream.duration:
        return (
            stream.start_time or 0
        ) * stream.time_base + stream.duration * stream.time_base
    tag_value = {k.lower(): v for k, v in stream.metadata.items()}.get(
        "duration"
    )  # Matroska: HH:MM:SS.nnnnnnnnn
    if tag_value and tag_value.count(":") == 2:
        hours, minutes, seconds = tag_value.split(":")
        return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
    return None


def _copy_metadata(source: dict[str, str], target: Any) -> None:
    for key, value in source.items():
        if key.lower() not in _STALE_TAGS:
            target.metadata[key] = value


def _add_other_streams(
    source: av.container.InputContainer, video: av.video.stream.VideoStream, out: av.container.OutputContainer,
    suffix: str, result: VideoResult,
) -> dict[int, av.stream.Stream]:  # fmt: skip
    """Streams other than the upscaled one, copied where `out` holds their codec; the rest listed with why."""
    copies = {}
    held = out.supported_codecs
    for stream in source.streams:
        if stream is video:
            continue
        label = f"stream #{stream.index} ({stream.type}, {stream.codec_context.name if stream.codec_context else '?'})"
        if stream.type == "video":
            result.dropped.append(f"{label}: only the first video stream is upscaled")
        elif stream.type not in ("audio", "subtitle", "attachment"):
            result.dropped.append(f"{label}: {stream.type} streams are not copied")
        elif stream.type == "attachment" and suffix != ".mkv":
            result.dropped.append(f"{label}: only .mkv holds attachments")
        elif stream.type != "attachment" and stream.codec_context.name not in held:
            result.dropped.append(f"{label}: {suffix} cannot hold it (.mkv holds most)")
        else:
            copies[stream.index] = out.add_stream_from_template(stream)
            _copy_metadata(stream.metadata, copies[stream.index])
            result.copied.append(label)
    return copies


def _check_memory(width: int, height: int, colour: Colour) -> None:
    """Frames in flight: the queues' RGB frames and the encoder's lookahead, at the x4 size."""
    pixels = width * height
    needed = pixels * (
        3 * (2 if colour.deep else 1) * (2 * QUEUE_ITEMS + 3) + 3 * _ENCODER_FRAMES
    )
    room = available_bytes()
    if room is not None and needed > room:
        raise VideoError(
            f"{width}x{height} frames need about {gib(needed)} in flight; {gib(room)} is available"
        )


def _display_matrix(source: Path, index: int) -> list[int] | None:
    """The display matrix (rotation and mirroring: 9 int32, AV_FRAME_DATA_DISPLAYMATRIX in libavutil/
    display.h) of video stream `index`'s first frame, None when it has none or the identity.

    Read from a decoded frame because PyAV 18.1 exposes no input stream's side data: FFmpeg's decoders put
    the container's matrix (MP4/MOV tkhd, Matroska projection: AVCodecParameters.coded_side_data, attached
    to frames in libavcodec/decode.c) and an H.264/HEVC display orientation SEI on every frame. A separate
    open, so that the output's header carries it before any packet is written; damage is left to the real
    read."""
    try:
        with av.open(str(source)) as probe:
            for frame in probe.decode(probe.streams[index]):
                data = frame.side_data.get("DISPLAYMATRIX")
                if data is None:
                    return None
                # int32 in native byte order, as av_display_rotation_set() writes them.
                matrix = np.frombuffer(bytes(data), np.int32).tolist()
                return None if matrix == _IDENTITY else matrix
    except (av.error.FFmpegError, ValueError):
        return None
    return None


def _add_video_stream(
    out: av.container.OutputContainer, video: av.video.stream.VideoStream, plan: EncoderPlan, colour: Colour,
    size: tuple[int, int], matrix: list[int] | None,
) -> av.video.stream.VideoStream:  # fmt: skip
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    stream = out.add_stream(plan.codec.encoder, rate=rate, options=plan.options)
    stream.width, stream.height = size
    stream.pix_fmt = plan.pix_fmt
    stream.time_base = video.time_base
    stream.codec_context.time_base = video.time_base
    if video.codec_context.sample_aspect_ratio:
        stream.codec_context.sample_aspect_ratio = (
            video.codec_context.sample_aspect_ratio
        )
    tag(stream.codec_context, colour)
    if matrix is not None:
        # The stream's coded side data, written with the header (PyAV's VideoStream.set_display_matrix), as
        # an FFmpeg remux keeps it: the mov and matroska muxers write it as their rotation fields.
        stream.set_display_matrix(matrix)
    _copy_metadata(video.metadata, stream)
    return stream


@dataclass
class _Frame:
    index: int
    pixels: np.ndarray
    pts: int
    duration: int


def upscale_video(
    source: str | Path,
    target: str | Path,
    upscaler: Upscaler,
    *,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    overwrite: bool | None = None,
    progress: bool = True,
) -> VideoResult:
    """x4 every frame of `source`'s first video stream into `target`, other streams copied, timing and colour
    kept (module docstring). VideoError (a DeployError) for anything wrong, with nothing written. `codec`,
    `crf`, `preset` and `overwrite` left at None are the upscaler's settings (runtime/settings.py)."""
    from tqdm import tqdm

    settings = upscaler.settings
    check_scale(source, settings.outscale)
    codec, crf, preset = codec or settings.codec, settings.crf if crf is None else crf, preset or settings.preset
    overwrite = settings.overwrite if overwrite is None else overwrite
    source, target = Path(source), Path(target)
    started = time.perf_counter()
    # SVT-AV1 prints its configuration to stderr unless SVT_LOG says otherwise; it reads the variable when
    # its first encoder opens, so it is set here, by the call that may open one, never at import.
    os.environ.setdefault("SVT_LOG", "1")
    if not overwrite and target.is_file() and is_result(source, target):
        return VideoResult(target, 0, "", "", skipped=True)
    replace = _check_target(source, target, overwrite)
    with contextlib.closing(_open(source)) as container:
        video = _video_stream(container, source)
        ctx = video.codec_context
        if not ctx.pix_fmt or not ctx.width:
            raise VideoError(
                f"{source}: damaged at frame 1: its video stream cannot be decoded (truncated?)"
            )
        if ctx.width * ctx.height > upscaler.max_pixels:
            raise VideoError(
                f"{source}: {ctx.width}x{ctx.height} frames exceed the limit of {upscaler.max_pixels} pixels"
            )
        size = (ctx.width * SCALE, ctx.height * SCALE)
        plan = plan_encoder(
            target.suffix, ctx.pix_fmt, *size, codec=codec, crf=crf, preset=preset
        )
        colour_in = stream_colour(video)
        colour_out = output_colour(colour_in, plan.pix_fmt)
        check_conversion(ctx.pix_fmt, colour_in)
        check_conversion(plan.pix_fmt, colour_out)
        _check_memory(*size, colour_in)
        matrix = _display_matrix(source, video.index)
        result = VideoResult(target, 0, plan.describe(), colour_out.describe())
        timer = Timer()
        ctx.thread_type = "AUTO"
        with (
            atomic_path(target, replace=replace) as tmp,
            av.open(str(tmp), "w", format=container_for(target.suffix)) as out,
        ):
            _copy_metadata(container.metadata, out)
            encoded = _add_video_stream(out, video, plan, colour_out, size, matrix)
            copies = _add_other_streams(
                container, video, out, target.suffix.lower(), result
            )
            end = _declared_end(video)
            expected = video.frames or (round(end * video.average_rate) if end and video.average_rate else None)
            bar = tqdm(
                total=expected,
                unit="frame",
                desc=source.name,
                disable=not progress,
                file=sys.stderr,
            )
            reader = _Reader(container, video, colour_in, copies, source, timer)

            def upscale(item: Any) -> Any:
                if isinstance(item, _Frame):
                    since = time.perf_counter()
                    item.pixels = upscaler(item.pixels)
                    timer.add("inference", since)
                    bar.update(1)
                return item

            with bar:
                run_stages(
                    reader.read,
                    upscale,
                    lambda items: _write(items, out, encoded, colour_out, plan, timer),
                )
            reader.check_complete()
            result.frames = reader.frames
    result.seconds = timer.seconds
    result.wall_s = time.perf_counter() - started
    return result


class _Reader:
    """Demux and decode: video frames as RGB, the packets of copied streams as they are."""

    def __init__(self, container, video, colour: Colour, copies: dict[int, av.stream.Stream], source: Path,
                 timer: Timer) -> None:  # fmt: skip
        self.container, self.video, self.colour, self.copies = (
            container,
            video,
            colour,
            copies,
        )
        self.source, self.timer = source, timer
        self.frames = 0
        self.end = Fraction(0)

    def _where(self) -> str:
        return f"frame {self.frames + 1} (after {float(self.end):.3f} s)"

    def read(self, channel: Channel) -> None:
        streams = [
            self.video,
            *(s for s in self.container.streams if s.index in self.copies),
        ]
        since = time.perf_counter()
        try:
            for packet in self.container.demux(streams):
                if packet.stream_index != self.video.index:
                    if packet.size:  # not the empty packet that ends each stream
                        packet.stream = self.copies[packet.stream_index]
                        channel.put(packet)
                    continue
                if packet.is_corrupt:
                    raise VideoError(
                        f"{self.source}: damaged at {self._where()}: a corrupt packet"
                    )
                for frame in packet.decode():
                    item = self._frame(frame)
                    self.timer.add("decode", since)
                    channel.put(item)
                    since = time.perf_counter()
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"{self.source}: damaged at {self._where()}: {exc.strerror or exc}"
            ) from None
        self.timer.add("decode", since)

    def _frame(self, frame: av.VideoFrame) -> _Frame:
        if frame.is_corrupt:
            raise VideoError(
                f"{self.source}: damaged at {self._where()}: the decoder reports a corrupt frame"
            )
        tb = self.video.time_base
        pts = frame.pts if frame.pts is not None else round(self.end / tb)
        duration = frame.duration or (
            round(1 / (self.video.average_rate * tb)) if self.video.average_rate else 0
        )
        self.frames += 1
        self.end = (pts + duration) * tb
        return _Frame(self.frames, to_rgb(frame, self.colour), pts, duration)

    def check_complete(self) -> None:
        """No frames, fewer than the container declares, or an early end: a truncated or empty video."""
        if self.frames == 0:
            raise VideoError(f"{self.source}: the video stream has no frames")
        declared = self.video.frames
        if declared and self.frames < declared:
            raise VideoError(
                f"{self.source}: ends at {self._where()} of {declared} declared: truncated?"
            )
        end = _declared_end(self.video)
        period = 1 / self.video.average_rate if self.video.average_rate else Fraction(0)
        if end is not None and self.end + period < end:
            raise VideoError(
                f"{self.source}: ends at {self._where()} of {float(end):.3f} s declared: truncated?"
            )


def _write(
    items: Channel, out, stream, colour: Colour, plan: EncoderPlan, timer: Timer
) -> None:
    """Encode upscaled frames and mux them with the copied packets, in order; flush at the end."""
    for item in items:
        since = time.perf_counter()
        if isinstance(item, _Frame):
            frame = from_rgb(item.pixels, colour, plan.pix_fmt)
            frame.pts, frame.duration, frame.time_base = (
                item.pts,
                item.duration,
                stream.codec_context.time_base,
            )
            out.mux(stream.encode(frame))
        else:
            out.mux(item)
        timer.add("encode", since)
    since = time.perf_counter()
    out.mux(stream.encode(None))
    timer.add("encode", since)
