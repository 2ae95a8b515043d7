"""Same outputs as a reference tree: every file upscale.py writes, and its exit codes and messages.

Compared byte for byte between this tree (or --current) and a reference checkout (--base), so that a
refactor can show that it changed nothing a user sees.

    python -m bench.same_outputs --base /work/base [--current DIR] [--work DIR]

Run from the project root with the project's virtual environment active (both trees run with this Python).
The current tree exports the checkpoint once (`export.py --flavor none`, ONNX only) and both trees run with
`--engines-dir` on that one export, so the model is the same by construction. Inputs are made here from
scikit-image's bundled photos: small PNGs (8- and 16-bit RGB, grey, grey+alpha, RGBA with soft alpha), a
JPEG with an EXIF orientation and an ICC profile, WebP, TIFF, BMP, one image of several 64-pixel tiles,
a truncated PNG, and two 12-frame videos (H.264 with AAC audio in .mp4, FFV1 in .mkv). Each case runs
with each tree (cwd and PYTHONPATH that tree's root, which is checked before any case: every top-level
package must resolve inside it; Ray's local workers inherit both), and the outcomes are compared: the
files in the case's folder (names and sha256), every step's exit code, stdout and stderr. Prints
`same  CASE` or `DIFF  CASE: what differs` per case, then `N same, M different`; exits 1 if any differ.

Normalised before comparing, and nothing else:
- stdout and stderr: the run folders and tree roots are replaced by placeholders; progress bars (tqdm
  segments, which depend on timing) and blank lines are dropped, and so are Ray's own log records (lines
  that start with a timestamp: they carry times, process ids, random dataset ids and progress snapshots
  that depend on scheduling). The project's own messages carry no timings.
- lsanet-report.jsonl (--cluster ray): each line without `seconds` (time spent), run folders replaced, and
  the lines sorted by input (Ray Data does not preserve row order by default, so the line order depends on
  which task finished first).
- .mkv: FFmpeg's Matroska muxer writes a random SegmentUID and random TrackUIDs (libavformat/matroskaenc.c:
  random unless the muxer runs with the bitexact flag, which upscale.py does not set), so two runs of
  the same tree differ there. Their bytes, the TagTrackUIDs that repeat them, and the CRC-32 elements of
  the Info, Tracks and Tags elements that hold them (a checksum of bytes compared anyway) are zeroed.
  Everything else, the encoded frames included, is compared as written. A file that does not parse as
  Matroska is compared as written.
- .mp4 needs nothing: its creation and modification times are 0 (the source has no creation_time), and its
  version strings (Lavf, Lavc, x264's options with its thread count) come from the one Python environment
  and machine both trees run on.

About a minute and a half on two cores, a third of it the export and Ray's start-ups.
"""

from __future__ import annotations

import argparse
import fractions
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT.parent / "shared" / "weights" / "team44_LSANet.pth"
STEP_TIMEOUT_S = 180
EXPORT_TIMEOUT_S = 300
# A tqdm bar ends in its times and rate: "[00:01<00:02, 3.1tile/s]" (total known) or "[00:01, 3.1frame/s]".
_PROGRESS = re.compile(r"\[(?:\d+:)?\d\d:\d\d[<,][^\]]*\]\s*$")
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal control: tqdm moves the cursor between nested bars
# Ray's log records, Python's ("2026-01-05 12:25:21,946\tWARNING ...") and its C++ core's ("[2026-01-05 ...").
_RAY_RECORD = re.compile(r"^\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3}")


# ---------------------------------------------------------------------------------------------- inputs


def _png(path: Path, pixels: np.ndarray) -> None:
    """A PNG of any colour type at the array's bit depth (Pillow cannot write 16-bit RGB): one IDAT, no filter."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(height, -1).view(np.uint8)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, pixels.dtype.itemsize * 8, colour_type, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def _soft_alpha(height: int, width: int, texture: np.ndarray) -> np.ndarray:
    """Alpha that takes many levels: a radial fade from opaque to clear, modulated by a photo's texture."""
    y, x = np.mgrid[:height, :width]
    fade = 1 - np.hypot((y - height / 2) / height, (x - width / 2) / width) * 1.6
    return np.clip(fade * 255 * (0.6 + 0.4 * texture[:height, :width] / 255), 0, 255).astype(np.uint8)


def _video(path: Path, codec: str, frames: list[np.ndarray], audio: bool) -> None:
    """A 12 fps video of `frames` (yuv420p); with `audio`, one second of a 440 Hz tone in AAC beside it."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            frame.time_base = fractions.Fraction(1, 12)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
            for start in range(0, tone.size, 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def make_inputs(folder: Path) -> None:
    """Every input the cases read (module docstring), under `folder`: made once, read by both trees."""
    coffee, astronaut, chelsea = data.coffee(), data.astronaut(), data.chelsea()
    grey_chelsea = (chelsea.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
    photos = folder / "photos"
    photos.mkdir(parents=True)
    PILImage.fromarray(coffee[150:198, 250:314]).save(photos / "rgb8.png")
    # 16 bits that use the low byte too: the photo x257 plus a ramp, so a round trip through 8 bits would show.
    deep = astronaut[40:104, 180:260].astype(np.uint16) * 257 + (np.arange(80, dtype=np.uint16) * 3)[None, :, None]
    _png(photos / "rgb16.png", deep)
    PILImage.fromarray(grey_chelsea[60:105, 200:257]).save(photos / "grey.png")
    y, x = np.mgrid[:40, :48]
    cutout = np.where(np.hypot(y - 20, x - 24) < 15, 255, 0).astype(np.uint8)  # binary alpha: the threshold rule
    PILImage.fromarray(np.dstack([grey_chelsea[150:190, 100:148], cutout]), "LA").save(photos / "grey_alpha.png")
    rgba = np.dstack([chelsea[20:76, 300:372], _soft_alpha(56, 72, grey_chelsea[200:256, 10:82])])
    PILImage.fromarray(rgba, "RGBA").save(photos / "rgba.png")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # orientation: stored on its side, shown turned a quarter clockwise
    exif[0x010F] = "same_outputs"  # Make: EXIF that is carried into the result
    jpeg = PILImage.fromarray(astronaut[300:380, 300:396])
    jpeg.save(photos / "exif.jpg", quality=90, exif=exif.tobytes(), icc_profile=srgb)
    PILImage.fromarray(coffee[40:88, 400:464]).save(photos / "webp.webp", lossless=True)
    PILImage.fromarray(chelsea[180:236, 200:264]).save(photos / "tiff.tif", icc_profile=srgb)
    PILImage.fromarray(coffee[300:341, 100:150]).save(photos / "bmp.bmp")
    PILImage.fromarray(astronaut[200:330, 150:300]).save(folder / "large.png")  # 150x130: 9 tiles at --tile 64
    whole = (photos / "rgb8.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    mixed = folder / "mixed"
    mixed.mkdir()
    shutil.copy(photos / "rgb8.png", mixed)
    shutil.copy(folder / "truncated.png", mixed)
    (mixed / "notes.txt").write_text("not an image\n")
    clash = folder / "clash"  # two inputs, one output name
    clash.mkdir()
    shutil.copy(photos / "rgb8.png", clash / "photo.png")
    PILImage.fromarray(coffee[150:198, 250:314]).save(clash / "photo.bmp")
    frames = [np.ascontiguousarray(chelsea[80 + 2 * i : 128 + 2 * i, 150 + 3 * i : 214 + 3 * i]) for i in range(12)]
    _video(folder / "clip.mp4", "libx264", frames, audio=True)
    _video(folder / "clip.mkv", "ffv1", frames, audio=False)


# ----------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """Steps are upscale.py's arguments; `{in}` is the inputs folder, `{out}` this case's folder for one tree
    (made empty before the steps, then filled by `setup` from the inputs folder)."""

    name: str
    steps: list[list[str]]
    setup: Callable[[Path, Path], None] | None = None


def _copy(*names: str) -> Callable[[Path, Path], None]:
    def setup(inputs: Path, folder: Path) -> None:
        for name in names:
            shutil.copy(inputs / name, folder)

    return setup


CASES = [
    Case("image -> file (png)", [["{in}/photos/rgb8.png", "{out}/out.png"]]),
    Case("image -> file (jpeg: EXIF orientation, ICC)", [["{in}/photos/exif.jpg", "{out}/out.jpg"]]),
    Case(
        "image -> beside it, then its folder (earlier result skipped, existing output refused)",
        [["{out}/rgb8.png"], ["{out}"]],
        _copy("photos/rgb8.png", "photos/grey.png"),
    ),
    Case("folder -> folder (pipelined)", [["{in}/photos", "{out}/result"]]),
    Case("folder -> folder --ext png", [["{in}/photos", "{out}/result", "--ext", "png"]]),
    Case("folder -> folder --ext tiff", [["{in}/photos", "{out}/result", "--ext", "tiff"]]),
    Case("--tile 64 --overlap 8", [["{in}/large.png", "{out}/out.png", "--tile", "64", "--overlap", "8"]]),
    Case("--backend onnxruntime", [["{in}/photos", "{out}/result", "--backend", "onnxruntime"]]),
    Case("--backend onnxruntime --fp16", [["{in}/photos", "{out}/result", "--backend", "onnxruntime", "--fp16"]]),
    Case("--backend openvino", [["{in}/photos", "{out}/result", "--backend", "openvino"]]),
    Case("video mp4 (h264 + aac) -> mp4", [["{in}/clip.mp4", "{out}/clip_x4.mp4"]]),
    Case("video mkv (ffv1) -> mkv", [["{in}/clip.mkv", "{out}/clip_x4.mkv"]]),
    Case("video mkv (ffv1) -> mkv --codec ffv1", [["{in}/clip.mkv", "{out}/clip_x4.mkv", "--codec", "ffv1"]]),
    Case("--cluster ray folder -> folder", [["{in}/photos", "{out}/result", "--cluster", "ray"]]),
    Case("re-run into the same output folder", [["{in}/photos", "{out}/result"], ["{in}/photos", "{out}/result"]]),
    Case("error: bad --ext", [["{in}/photos", "{out}/result", "--ext", "gif"]]),
    Case("error: missing input", [["{in}/missing.png", "{out}/out.png"]]),
    Case("error: truncated png", [["{in}/truncated.png", "{out}/out.png"]]),
    Case("error: folder with a truncated png and a text file", [["{in}/mixed", "{out}/result"]]),
    Case("error: two inputs for one output (--ext png)", [["{in}/clash", "{out}/result", "--ext", "png"]]),
]


# --------------------------------------------------------------------------------------------- running


@dataclass
class Step:
    code: int | str  # the exit status, or "timeout"
    stdout: list[str]
    stderr: list[str]


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # relative path: (digest, bytes)


@dataclass
class Tree:
    label: str
    root: Path
    env: dict[str, str]
    runs: Path  # this tree's case folders


def tree(label: str, root: Path, work: Path) -> Tree:
    """A tree to run: its Python path is its own root, its caches its own (OpenVINO's compiled models)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LSANET_ENGINES", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(root), LSANET_CACHE=str(work / "cache" / label), PYTHONDONTWRITEBYTECODE="1")
    return Tree(label, root, env, work / label)


def check_imports(t: Tree) -> list[str]:
    """The tree's top-level packages as its runs resolve them; SystemExit if any resolves outside the tree."""
    names = sorted(p.parent.name for p in t.root.glob("*/__init__.py"))
    code = "import importlib.util, sys; print('\\n'.join(importlib.util.find_spec(n).origin for n in sys.argv[1:]))"
    command = [sys.executable, "-c", code, *names]
    done = subprocess.run(command, cwd=t.root, env=t.env, capture_output=True, text=True, timeout=60, check=False)
    origins = done.stdout.split()
    if done.returncode or len(origins) != len(names) or not all(Path(o).is_relative_to(t.root) for o in origins):
        raise SystemExit(f"{t.label} ({t.root}) imports {names} from {origins or done.stderr.strip()}")
    return names


def export(t: Tree, checkpoint: Path, engines: Path) -> float:
    """The ONNX export both trees run on, made by `t`; returns its seconds."""
    started = time.perf_counter()
    command = [sys.executable, "export.py", "--ckpt", str(checkpoint), "--out", str(engines), "--flavor", "none"]
    done = subprocess.run(command, cwd=t.root, env=t.env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S,
                          check=False)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"export with {t.root} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def normalise(text: str, t: Tree, work: Path) -> list[str]:
    """Output lines as compared (module docstring): placeholders for folders; no bars, blanks or Ray records."""
    for path, name in ((t.runs, "<RUN>"), (work, "<WORK>"), (t.root, "<TREE>")):
        text = text.replace(str(path), name)
    lines = []
    for line in text.split("\n"):
        if _RAY_RECORD.match(line):
            continue
        parts = (_ESCAPE.sub("", part).rstrip() for part in line.split("\r"))
        kept = [part for part in parts if part.strip() and not _PROGRESS.search(part)]
        if kept:
            lines.append("".join(kept))
    return lines


def run_case(case: Case, t: Tree, inputs: Path, engines: Path, work: Path) -> Outcome:
    folder = t.runs / f"case{CASES.index(case):02d}"
    folder.mkdir(parents=True)
    if case.setup is not None:
        case.setup(inputs, folder)
    outcome = Outcome()
    for args in case.steps:
        argv = [a.replace("{in}", str(inputs)).replace("{out}", str(folder)) for a in args]
        command = [sys.executable, "upscale.py", *argv, "--engines-dir", str(engines)]
        try:
            done = subprocess.run(command, cwd=t.root, env=t.env, capture_output=True, text=True,
                                  timeout=STEP_TIMEOUT_S, check=False)  # fmt: skip
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = "timeout", _text(exc.stdout), _text(exc.stderr)
        outcome.steps.append(Step(code, normalise(stdout, t, work), normalise(stderr, t, work)))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        outcome.files[str(path.relative_to(folder))] = (digest(path, t, work), path.stat().st_size)
    return outcome


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# -------------------------------------------------------------------------------------- file contents


def digest(path: Path, t: Tree, work: Path) -> str:
    """sha256 of the file's bytes, after the normalisation its kind needs (module docstring)."""
    content = path.read_bytes()
    if path.name == "lsanet-report.jsonl":
        content = _report(content.decode(), t, work).encode()
    elif path.suffix == ".mkv":
        content = _matroska_without_uids(content)
    return hashlib.sha256(content).hexdigest()


def _report(text: str, t: Tree, work: Path) -> str:
    lines = []
    for line in text.splitlines():
        row = json.loads(line)
        row.pop("seconds", None)
        lines.append(normalise(json.dumps(row), t, work)[0])
    return "\n".join(sorted(lines))


_SEGMENT, _INFO, _TRACKS, _TRACK_ENTRY = 0x18538067, 0x1549A966, 0x1654AE6B, 0xAE
_TAGS, _TAG, _TARGETS = 0x1254C367, 0x7373, 0x63C0
_SEGMENT_UID, _TRACK_UID, _TAG_TRACK_UID, _CRC32 = 0x73A4, 0x73C5, 0x63C5, 0xBF
_MASTERS = {_SEGMENT, _INFO, _TRACKS, _TRACK_ENTRY, _TAGS, _TAG, _TARGETS}
_RANDOM = {_SEGMENT_UID, _TRACK_UID, _TAG_TRACK_UID}


def _vint(content: bytes | bytearray, at: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `at`: (value, its length); an unknown size reads as -1."""
    first = content[at]
    length = 9 - first.bit_length()
    value = int.from_bytes(content[at : at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            return -1, length
    return value, length


def _matroska_without_uids(content: bytes) -> bytes:
    """The file with its random UIDs, and the checksums over them, zeroed (module docstring)."""
    out = bytearray(content)

    def walk(start: int, end: int, parent: int | None) -> None:
        at = start
        while at < end:
            ident, id_length = _vint(out, at, keep_marker=True)
            size, size_length = _vint(out, at + id_length, keep_marker=False)
            body = at + id_length + size_length
            stop = end if size < 0 else body + size
            if ident in _MASTERS:
                walk(body, stop, ident)
            elif ident in _RANDOM or ident == _CRC32 and parent in (_INFO, _TRACKS, _TAGS):
                out[body:stop] = bytes(stop - body)
            at = stop

    try:
        walk(0, len(out), None)
    except IndexError:  # an element runs past the end: not the Matroska FFmpeg writes
        return content
    return bytes(out)


# ----------------------------------------------------------------------------------------- comparing


def _first_difference(a: list[str], b: list[str]) -> str:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {index + 1}: {x[:160]!r} vs {y[:160]!r}"
    longer, extra = ("base", a[len(b)]) if len(a) > len(b) else ("current", b[len(a)])
    return f"{longer} has more lines, from {extra[:160]!r}"


def differences(base: Outcome, current: Outcome) -> list[str]:
    """What differs between the two trees' outcomes of one case, each said in a few words."""
    found = []
    for number, (a, b) in enumerate(zip(base.steps, current.steps), 1):
        step = f"step {number} " if len(base.steps) > 1 else ""
        if a.code != b.code:
            found.append(f"{step}exit {a.code} vs {b.code}")
        for stream in ("stdout", "stderr"):
            if getattr(a, stream) != getattr(b, stream):
                found.append(f"{step}{stream} {_first_difference(getattr(a, stream), getattr(b, stream))}")
    for label, mine, theirs in (("base", base.files, current.files), ("current", current.files, base.files)):
        if only := sorted(set(mine) - set(theirs)):
            found.append(f"files only in {label}: {', '.join(only)}")
    changed = [
        f"{name} ({base.files[name][1]} vs {current.files[name][1]} bytes)"
        for name in sorted(set(base.files) & set(current.files))
        if base.files[name][0] != current.files[name][0]
    ]
    if changed:
        found.append(f"bytes differ: {', '.join(changed)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the reference tree (a checkout of the reference)")
    parser.add_argument("--current", type=Path, default=ROOT, help=f"the tree under test (default: {ROOT})")
    parser.add_argument("--ckpt", type=Path, default=CHECKPOINT, help=f"checkpoint to export (default: {CHECKPOINT})")
    parser.add_argument("--work", type=Path, help="keep inputs, the export and every output here (absent or empty)")
    args = parser.parse_args()
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work}: not empty (the re-run case needs fresh output folders)")
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as scratch:
        work = (args.work or Path(scratch)).resolve()
        trees = [tree("base", args.base.resolve(), work), tree("current", args.current.resolve(), work)]
        for t in trees:
            print(f"{t.label}: {t.root} (imports {', '.join(check_imports(t))} from it)")
        engines, inputs = work / "engines", work / "inputs"
        print(f"export: {export(trees[1], args.ckpt.resolve(), engines):.0f} s, by the current tree")
        make_inputs(inputs)
        same = 0
        for case in CASES:
            base, current = (run_case(case, t, inputs, engines, work) for t in trees)
            found = differences(base, current)
            same += not found
            print(f"DIFF  {case.name}: {'; '.join(found)}" if found else f"same  {case.name}", flush=True)
    print(f"{same} same, {len(CASES) - same} different")
    return 0 if same == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
