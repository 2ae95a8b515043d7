"""Video: clips made here with PyAV from a real photo (a slow pan over scikit-image's astronaut, 48x32, 24
frames, with a sine tone) go through `upscale_video`; timing, audio, colour and pixels are checked against
the source and against the image path (`Upscaler` on the same decoded frame)."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import DeployError, OutputError
from runtime import Upscaler
from runtime.jobs.channel import QUEUE_ITEMS, run_stages
from runtime.settings import Settings
from runtime.video.codecs import CodecError, plan_encoder
from runtime.video.colour import from_rgb, stream_colour, to_rgb
from runtime.video.upscale import is_video, upscale_video

FRAMES, WIDTH, HEIGHT = 24, 48, 32
# Variable frame rate: durations in ms (a Matroska time base represents them exactly).
VFR_MS = [40, 40, 80, 20, 60, 40, 120, 40] * 3
QUIET_X265 = {"x265-params": "log-level=error"}


def pan(
    count: int = FRAMES, width: int = WIDTH, height: int = HEIGHT
) -> list[np.ndarray]:
    """A slow pan (1 px a frame across, 1 px every two down) over the astronaut photo, shrunk 4x."""
    from skimage import data

    photo = data.astronaut()[:, :, :3].astype(np.float32)
    small = photo.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return [
        np.ascontiguousarray(
            small[20 + i // 2 : 20 + i // 2 + height, 30 + i : 30 + i + width]
        )
        for i in range(count)
    ]


def make_clip(path: Path, frames: list[np.ndarray], *, codec: str = "libx264", pix_fmt: str = "yuv420p",
              durations_ms: list[int] | None = None, audio: bool = True, options: dict | None = None,
              matrix: int = 1, full_range: bool = False, tags: tuple[int, int] | None = None,
              yuv: list[list[np.ndarray]] | None = None) -> Path:  # fmt: skip
    """Write a clip: RGB frames (or YUV planes as given), timestamps from `durations_ms` (else 25 fps) in a
    1/1000 time base, optionally tagged (matrix, range, primaries/transfer) and with a 440 Hz AAC tone."""
    tb = Fraction(1, 1000)
    starts = np.cumsum([0, *(durations_ms or [40] * len(frames))])
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25, options=options or {})
        video.width, video.height, video.pix_fmt = (
            frames[0].shape[1],
            frames[0].shape[0],
            pix_fmt,
        )
        video.codec_context.time_base = tb
        if tags is not None:
            ctx = video.codec_context
            ctx.colorspace, ctx.color_range = matrix, 2 if full_range else 1
            ctx.color_primaries, ctx.color_trc = tags
        for i, rgb in enumerate(frames):
            if yuv is not None:
                frame = av.VideoFrame(rgb.shape[1], rgb.shape[0], pix_fmt)
                for plane, data in zip(frame.planes, yuv[i]):
                    rows = np.zeros(
                        (plane.height, plane.line_size), np.uint8
                    )  # lines are padded
                    rows[:, : data.shape[1]] = data
                    plane.update(rows.tobytes())
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    format=pix_fmt,
                    dst_colorspace=matrix,
                    src_color_range=2,
                    dst_color_range=2 if full_range else 1,
                )
            frame.pts, frame.time_base = int(starts[i]), tb
            frame.duration = int(starts[i + 1] - starts[i])
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    if audio:
        _add_tone(path, float(starts[-1]) / 1000)
    return path


def _add_tone(path: Path, seconds: float) -> None:
    """Re-mux `path` with a 440 Hz AAC tone of `seconds` beside its video (packets copied)."""
    tmp = path.with_name("tone_" + path.name)
    with av.open(str(path)) as src, av.open(str(tmp), "w") as out:
        video = out.add_stream_from_template(src.streams.video[0])
        tone = out.add_stream("aac", rate=48000)
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        t = np.arange(int(48000 * seconds)) / 48000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, k : k + 1024]),
                format="fltp",
                layout="mono",
            )
            frame.sample_rate, frame.pts = 48000, k
            out.mux(tone.encode(frame))
        out.mux(tone.encode(None))
    tmp.replace(path)


def video_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def times(path: Path) -> list[Fraction]:
    """Presentation times of the video frames, in seconds, exactly."""
    return [f.pts * f.time_base for f in video_frames(path)]


def audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    with av.open(str(path)) as container:
        return [
            (p.pts * p.time_base, bytes(p)) for p in container.demux(audio=0) if p.size
        ]


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The frame's planes as arrays (line padding cut off)."""
    out = []
    for plane in frame.planes:
        dtype = (
            np.uint16
            if plane.line_size >= 2 * plane.width
            and frame.format.components[0].bits > 8
            else np.uint8
        )
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(
            plane.height, plane.line_size
        )
        out.append(rows[:, : plane.width * np.dtype(dtype).itemsize].copy().view(dtype))
    return out


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


class Nearest:
    """A stand-in for Upscaler where pixels do not matter (errors, interruption): nearest-neighbour x4."""

    max_pixels = 10**9
    settings = Settings(max_pixels=max_pixels)

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return pixels.repeat(4, axis=0).repeat(4, axis=1)


@pytest.fixture(scope="module")
def upscaler(exported):
    with Upscaler(engines_dir=exported[0]) as up:
        yield up


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    frames = pan()
    return {
        "cfr": make_clip(folder / "pan.mp4", frames),
        "vfr": make_clip(folder / "pan_vfr.mkv", frames, durations_ms=VFR_MS),
    }


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".part" in p.name]


@pytest.mark.parametrize(
    ("clip", "name", "codec", "min_psnr"),
    [
        # The lossy default (H.264, CRF 18) against the image path, in RGB: x264 at CRF 18 on these busy
        # 192x128 frames measures about 41 dB; 38 dB leaves room for encoder versions.
        ("cfr", "out.mp4", None, 38.0),
        # FFV1 is lossless: the planes written are exactly the image path's result converted to YUV.
        ("vfr", "out.mkv", "ffv1", None),
    ],
)
def test_timing_audio_and_pixels(
    tmp_path, clips, upscaler, clip, name, codec, min_psnr
) -> None:
    source, target = clips[clip], tmp_path / name
    result = upscale_video(source, target, upscaler, codec=codec, progress=False)
    assert result.frames == FRAMES and result.copied and not result.dropped
    assert times(target) == times(source) and len(times(target)) == FRAMES
    assert audio_packets(target) == audio_packets(source) and audio_packets(source)
    with av.open(str(source)) as container:
        colour = stream_colour(container.streams.video[0])
    for got, frame in zip(video_frames(target), video_frames(source)):
        expected_rgb = upscaler(to_rgb(frame, colour))
        assert (got.width, got.height) == (4 * WIDTH, 4 * HEIGHT)
        if min_psnr is None:
            expected = from_rgb(expected_rgb, colour, got.format.name)
            assert all(
                np.array_equal(a, b) for a, b in zip(planes(got), planes(expected))
            )
        else:
            assert psnr(to_rgb(got, colour), expected_rgb) > min_psnr


def test_ten_bit_hevc_stays_ten_bit(tmp_path, upscaler) -> None:
    # 64 wide: libx265 corrupts the heap on narrower frames (runtime/video/codecs.py).
    source = make_clip(tmp_path / "deep.mp4", pan(6, 64, 48), codec="libx265", pix_fmt="yuv420p10le", audio=False,
                       options=QUIET_X265)  # fmt: skip
    result = upscale_video(source, tmp_path / "deep_x4.mp4", upscaler, progress=False)
    assert "HEVC" in result.encoder and "16-bit" in result.colour
    with av.open(str(tmp_path / "deep_x4.mp4")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    luma = planes(video_frames(tmp_path / "deep_x4.mp4")[3])[0]
    assert luma.max() > 255 and np.any(luma % 4), (
        "values on a 10-bit grid, not 8-bit ones shifted up"
    )


def test_bt709_limited_range_keeps_its_tags(tmp_path) -> None:
    source = make_clip(
        tmp_path / "hd.mkv", pan(4), codec="ffv1", audio=False, matrix=1, tags=(1, 1)
    )
    upscale_video(
        source, tmp_path / "hd_x4.mkv", Nearest(), codec="ffv1", progress=False
    )
    for path in (source, tmp_path / "hd_x4.mkv"):
        ctx = av.open(str(path)).streams.video[0].codec_context
        assert (
            int(ctx.colorspace),
            int(ctx.color_range),
            int(ctx.color_primaries),
            int(ctx.color_trc),
        ) == (1, 1, 1, 1)


def _bt601_yuv(rgb: np.ndarray) -> np.ndarray:
    """Limited-range BT.601 Y'CbCr of RGB, by the formula (independent of swscale)."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack(
        [16 + 219 * y, 128 + 224 * (b - y) / 1.772, 128 + 224 * (r - y) / 1.402],
        axis=-1,
    )


def _rgb_from(yuv: np.ndarray, kr: float, kb: float) -> np.ndarray:
    y, cb, cr = (
        (yuv[..., 0] - 16) / 219,
        (yuv[..., 1] - 128) / 224,
        (yuv[..., 2] - 128) / 224,
    )
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    return np.stack([r, (y - kr * r - kb * b) / (1 - kr - kb), b], axis=-1) * 255


def test_bt601_is_not_shifted_in_colour(tmp_path, upscaler) -> None:
    """A flat saturated patch, written as BT.601 Y'CbCr by the formula and tagged so, comes out with the same
    RGB when read back by the formula. Reading it as BT.709 instead would move it by 20+ levels."""
    patch = np.array([200, 40, 90], np.uint8)
    rgb = np.broadcast_to(patch, (HEIGHT, WIDTH, 3)).copy()
    yuv = np.round(_bt601_yuv(rgb)).astype(np.uint8)
    planes_in = [[yuv[..., 0], yuv[::2, ::2, 1], yuv[::2, ::2, 2]]] * 4
    source = make_clip(
        tmp_path / "sd.mkv",
        [rgb] * 4,
        codec="ffv1",
        audio=False,
        matrix=6,
        tags=(6, 6),
        yuv=planes_in,
    )
    upscale_video(
        source, tmp_path / "sd_x4.mkv", upscaler, codec="ffv1", progress=False
    )
    y, u, v = planes(video_frames(tmp_path / "sd_x4.mkv")[2])
    centre = np.stack(
        [y[32:96:2, 48:144:2], u[16:48, 24:72], v[16:48, 24:72]], axis=-1
    ).astype(np.float64)
    mean = _rgb_from(centre, 0.299, 0.114).reshape(-1, 3).mean(axis=0)
    # 2 levels: the rounding of Y'CbCr twice (source, output) and the network's own error on a flat patch.
    assert np.abs(mean - patch).max() < 2.0, mean
    assert (
        np.abs(
            _rgb_from(centre, 0.2126, 0.0722).reshape(-1, 3).mean(axis=0) - patch
        ).max()
        > 10
    )


def test_bad_sources_are_one_line_errors_with_no_output(tmp_path) -> None:
    whole = make_clip(tmp_path / "whole.mkv", pan(), audio=False)
    truncated = tmp_path / "cut.mkv"
    truncated.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.8)])
    audio_only = tmp_path / "tone.mka"
    with av.open(str(audio_only), "w") as out:
        tone = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(tone.encode(frame) + tone.encode(None))
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        out.start_encoding()
    cases = [
        (truncated, "frame "),
        (audio_only, "no video stream"),
        (empty, ""),
        (whole.with_suffix(".avi"), "cannot write"),
    ]
    for source, needle in cases:
        target = (
            tmp_path
            / f"out_{source.stem}{source.suffix if source.suffix == '.avi' else '.mkv'}"
        )
        if source.suffix == ".avi":
            source, target = whole, source
        with pytest.raises(DeployError) as caught:
            upscale_video(source, target, Nearest(), progress=False)
        message = str(caught.value)
        assert needle in message and "\n" not in message, message
        assert not target.exists()
    assert no_leftovers(tmp_path) == []


def test_outputs_are_never_inputs_and_never_replaced_silently(tmp_path, clips) -> None:
    with pytest.raises(OutputError, match="overwrite its input"):
        upscale_video(clips["cfr"], clips["cfr"], Nearest(), progress=False)
    other = tmp_path / "taken.mp4"
    other.write_bytes(b"someone else's file")
    with pytest.raises(OutputError, match="exists"):
        upscale_video(clips["cfr"], other, Nearest(), progress=False)
    with pytest.raises(OutputError, match="not an earlier x4 result"):
        upscale_video(clips["cfr"], other, Nearest(), overwrite=True, progress=False)
    upscale_video(clips["cfr"], tmp_path / "mine.mp4", Nearest(), progress=False)
    assert (
        upscale_video(
            clips["cfr"],
            tmp_path / "mine.mp4",
            Nearest(),
            overwrite=True,
            progress=False,
        ).frames
        == FRAMES
    )


def test_interrupt_leaves_nothing_and_stops_the_threads(tmp_path, clips) -> None:
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        upscale_video(
            clips["cfr"], tmp_path / "stopped.mp4", Nearest(fail_at=5), progress=False
        )
    assert not (tmp_path / "stopped.mp4").exists() and no_leftovers(tmp_path) == []
    assert threading.active_count() == before


def test_codec_choices_are_checked_before_any_work() -> None:
    # x4 of 4K: beyond H.264's highest level; the default moves to HEVC, an explicit h264 is refused.
    assert plan_encoder(".mp4", "yuv420p", 15360, 8640).codec.name == "hevc"
    with pytest.raises(CodecError, match="beyond H.264's limits.*hevc"):
        plan_encoder(".mp4", "yuv420p", 15360, 8640, codec="h264")
    assert (
        plan_encoder(".mp4", "yuv420p", 1280, 720).describe()
        == "H.264 (libx264, yuv420p, crf 18, preset medium)"
    )
    assert plan_encoder(".webm", "yuv420p10le", 1280, 720).pix_fmt == "yuv420p10le"
    with pytest.raises(CodecError, match="64 pixels wide"):
        plan_encoder(".mp4", "yuv420p10le", 48, 32, codec="hevc")
    assert (
        plan_encoder(".mkv", "yuv422p10le", 1280, 720, codec="ffv1").pix_fmt
        == "yuv422p10le"
    )
    refused = [
        (".mov", {"codec": "ffv1"}, "cannot hold"),
        (".webm", {"codec": "h264"}, "cannot hold"),
        (".mkv", {"codec": "h264", "crf": 60}, "0 \\(best\\) to 51"),
        (".mkv", {"codec": "ffv1", "crf": 10}, "lossless"),
        (".mkv", {"preset": "warp"}, "ultrafast"),
        (".avi", {}, "cannot write"),
    ]
    for suffix, kwargs, needle in refused:
        with pytest.raises(CodecError, match=needle):
            plan_encoder(suffix, "yuv420p", 1280, 720, **kwargs)
    with pytest.raises(CodecError, match="no 10-bit"):
        plan_encoder(".webm", "yuv420p10le", 1280, 720, codec="vp9")
    assert is_video("a.MP4") and is_video("b.mkv") and not is_video("c.png")


def test_queues_bound_the_frames_in_flight() -> None:
    """However long the video, at most both queues plus one item in each stage exist at once."""
    alive, most = [0], [0]
    lock = threading.Lock()

    def read(channel) -> None:
        for i in range(200):
            with lock:
                alive[0] += 1
                most[0] = max(most[0], alive[0])
            channel.put(i)

    def write(items) -> None:
        for _ in items:
            time.sleep(0.001)
            with lock:
                alive[0] -= 1

    run_stages(read, lambda item: item, write)
    assert alive[0] == 0 and most[0] <= 2 * QUEUE_ITEMS + 3


def test_the_command_line_takes_a_video_and_stops_cleanly_on_sigterm(tmp_path, clips, exported) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, upscale_cli

    result = upscale_cli(exported, str(clips["vfr"]), str(tmp_path / "out.mkv"), "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert len(video_frames(tmp_path / "out.mkv")) == FRAMES and times(tmp_path / "out.mkv") == times(clips["vfr"])
    assert "1 written, 0 failed" in result.stderr
    # A folder run passes videos over, saying why.
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(clips["cfr"].read_bytes())
    assert "a video: upscale it on its own" in upscale_cli(exported, str(folder)).stderr
    # SIGTERM mid-run: exit 143, no output, no temporary.
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "upscale.py"), str(clips["cfr"]), str(tmp_path / "stopped.mp4"),
         "--engines-dir", str(exported[0]), "--quiet"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not no_leftovers(tmp_path) and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert not (tmp_path / "stopped.mp4").exists() and no_leftovers(tmp_path) == []
