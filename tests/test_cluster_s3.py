"""`upscale.py INPUT OUTPUT --cluster ray` against a real S3 endpoint: moto's S3 server on 127.0.0.1 (a free
port), a local Ray started once for the module, the command's own entry point (runtime.command.main) in
this process. Inputs and outputs in a bucket give the bytes a local `Upscaler` writes, a damaged object its
one-line error and the report object; a re-run redoes only the deleted result; an object that is not our
result is never replaced, even with --overwrite; local -> s3 and s3 -> local.

The endpoint is configured as a user would: Arrow's documented AWS_ENDPOINT_URL (read by pyarrow's
S3FileSystem, which runtime/jobs/storage.py makes from a plain `s3://bucket` URI) with dummy credentials
and a region in the environment, set before Ray starts so that its worker processes inherit them."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import uuid
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from runtime import Upscaler
from runtime.cluster import REPORT_NAME
from runtime.command import main

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "lsanet-s3-test"

for _module in ("ray", "moto", "boto3"):
    if importlib.util.find_spec(_module) is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{_module} is not installed: the [test] extra includes it, so CI must have it")
        pytest.skip(f"{_module} is not installed (pip install -e '.[test]')", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with one bucket, and the environment pointing every S3 client at it:
    a boto3 client for the test's own puts and gets."""
    import boto3
    from moto.server import ThreadedMotoServer

    from runtime.jobs import storage

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # no request log on stderr (the tests read it)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # would take precedence over AWS_ENDPOINT_URL
            env.delenv("AWS_PROFILE", raising=False)
            env.delenv("AWS_SESSION_TOKEN", raising=False)
            env.setenv("AWS_ENDPOINT_URL", endpoint)
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_REGION", "us-east-1")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the SDKs never look for an instance's metadata
            storage._bucket_filesystem.cache_clear()  # one filesystem per bucket and process: none from before
            client = boto3.client("s3")  # boto3 reads AWS_ENDPOINT_URL too
            assert client.meta.endpoint_url == endpoint
            client.create_bucket(Bucket=BUCKET)
            yield client
            storage._bucket_filesystem.cache_clear()
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture(scope="module")
def ray_s3(s3):
    """A local Ray started after the environment is set: its workers inherit the endpoint (checked)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        seen = ray.get(ray.remote(lambda: [os.environ.get(n) for n in ("AWS_ENDPOINT_URL", "AWS_REGION")]).remote())
        assert seen == [os.environ["AWS_ENDPOINT_URL"], "us-east-1"], seen
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def engines(request) -> Path:
    """This checkout's export where there is one (engines/, ignored by git), else the session's real export."""
    here = ROOT / "engines"
    return here if (here / "manifest.json").is_file() else request.getfixturevalue("exported")[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three small real photos: colour PNG, JPEG, 8-bit grey PNG."""
    from skimage import data

    here = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(here / "astronaut.png"), data.astronaut()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "coffee.jpg"), data.coffee()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "moon.png"), data.moon()[200:224, 200:232])
    return here


@pytest.fixture(scope="module")
def expected(engines, photos, tmp_path_factory) -> Path:
    """What the local, single-process run writes for each photo (`Upscaler.upscale_file`)."""
    out = tmp_path_factory.mktemp("local")
    with Upscaler(engines_dir=engines) as up:
        for source in photos.iterdir():
            up.upscale_file(source, out / _result(source.name))
    return out


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own in the bucket."""
    return f"t-{uuid.uuid4().hex[:8]}"


def _result(name: str) -> str:
    return f"{PurePosixPath(name).stem}_x4{PurePosixPath(name).suffix}"


def _put_inputs(s3, photos: Path, prefix: str, damaged: bool = True) -> list[str]:
    """The photos under PREFIX/in/ (plus a damaged PNG, and a text file that is no image); their names."""
    for photo in photos.iterdir():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/in/{photo.name}", Body=photo.read_bytes())
    if damaged:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/in/broken.png", Body=(photos / "astronaut.png").read_bytes()[:200])
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/in/notes.txt", Body=b"not an image")
    return sorted(p.name for p in photos.iterdir())


def _get(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _objects(s3, prefix: str) -> dict[str, tuple[str, object]]:
    """{name below PREFIX/: (ETag, LastModified)}."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
    return {o["Key"][len(prefix) + 1 :]: (o["ETag"], o["LastModified"]) for o in listed}


def _upscale(engines: Path, capsys, *args: str) -> tuple[int, str]:
    """upscale.py ARGS --cluster ray, in this process (the Ray of `ray_s3` is used as it is): (exit, stderr)."""
    capsys.readouterr()
    status = main([*args, "--cluster", "ray", "--engines-dir", str(engines), "--quiet"])
    return status, capsys.readouterr().err


def _report(text: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in text.splitlines()]
    names = {PurePosixPath(line["input"]).name: line for line in lines}
    assert len(names) == len(lines), lines  # one line per input
    return names


def _decoded_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image.shape[1], image.shape[0]


def _check_result(data: bytes, photos: Path, expected: Path, name: str) -> None:
    """4x its input's size, and byte for byte what the local run writes."""
    width, height = _decoded_size((photos / name).read_bytes())
    assert _decoded_size(data) == (4 * width, 4 * height), name
    assert data == (expected / _result(name)).read_bytes(), name


@pytest.mark.slow
def test_a_bucket_equals_the_local_run_and_a_rerun_redoes_only_what_is_missing(
    s3, ray_s3, engines, photos, expected, prefix, capsys
) -> None:
    names = _put_inputs(s3, photos, prefix)
    inputs, out = f"s3://{BUCKET}/{prefix}/in", f"s3://{BUCKET}/{prefix}/out"
    status, err = _upscale(engines, capsys, inputs, out)
    assert status == 1 and "3 written, 1 failed, 1 skipped" in err, err  # notes.txt: listed, not an image
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {inputs}/broken.png: "), err  # its URI, not a temp path
    summary = "3 written, 1 failed, 1 skipped"
    assert all(line.startswith(("error: ", f"skipped {inputs}/notes.txt: ")) or line == summary for line in err.splitlines()), err
    outputs = _objects(s3, f"{prefix}/out")
    assert sorted(outputs) == sorted([*map(_result, names), REPORT_NAME])
    for name in names:
        _check_result(_get(s3, f"{prefix}/out/{_result(name)}"), photos, expected, name)
    report = _report(_get(s3, f"{prefix}/out/{REPORT_NAME}").decode())
    assert sorted(report) == sorted([*names, "broken.png", "notes.txt"])
    for name in names:
        line = report[name]
        assert line["status"] == "written" and line["error"] == "" and line["attempts"] == 1, line
        assert line["input"] == f"{inputs}/{name}" and line["output"] == f"{out}/{_result(name)}", line
        assert line["backend"] and line["seconds"] > 0, line
    assert report["broken.png"]["status"] == "failed" and f"{inputs}/broken.png" in report["broken.png"]["error"]
    assert report["notes.txt"]["status"] == "skipped" and report["notes.txt"]["output"] is None

    # Resume: one result deleted, the others kept as they are; the report object rewritten.
    deleted = _result(names[0])
    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}/out/{deleted}")
    status, err = _upscale(engines, capsys, inputs, out)
    assert status == 1 and "1 written, 1 failed, 2 skipped (complete), 1 skipped" in err, err
    again = _objects(s3, f"{prefix}/out")
    assert sorted(again) == sorted(outputs)
    for name in map(_result, names[1:]):
        assert again[name] == outputs[name], name  # same ETag and LastModified: not written again
    assert again[REPORT_NAME] != outputs[REPORT_NAME]
    for name in names:
        _check_result(_get(s3, f"{prefix}/out/{_result(name)}"), photos, expected, name)
    report = _report(_get(s3, f"{prefix}/out/{REPORT_NAME}").decode())
    statuses = {name: line["status"] for name, line in report.items()}
    assert statuses == {names[0]: "written", **{n: "skipped" for n in names[1:]}, "broken.png": "failed",
                        "notes.txt": "skipped"}, statuses  # fmt: skip


@pytest.mark.slow
def test_an_object_that_is_not_our_result_is_never_replaced(s3, ray_s3, engines, photos, prefix, capsys) -> None:
    """Two foreign objects at result keys: bytes that are no image, and a photo exactly 4x its input's size
    that this tool did not make (no mark); with and without --overwrite."""
    names = _put_inputs(s3, photos, prefix, damaged=False)
    inputs, out = f"s3://{BUCKET}/{prefix}/in", f"s3://{BUCKET}/{prefix}/out"
    coffee = cv2.imread(str(photos / "coffee.jpg"))
    photo = cv2.imencode(".jpg", cv2.resize(coffee, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))[1].tobytes()
    foreign = {"astronaut_x4.png": b"not ours", "coffee_x4.jpg": photo}
    for name, data in foreign.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/out/{name}", Body=data)
    before = _objects(s3, f"{prefix}/out")

    status, err = _upscale(engines, capsys, inputs, out)
    assert status == 1 and "1 written, 2 failed" in err, err
    report = _report(_get(s3, f"{prefix}/out/{REPORT_NAME}").decode())
    assert {n: line["status"] for n, line in report.items()} == {"astronaut.png": "failed", "coffee.jpg": "failed",
                                                                 "moon.png": "written"}  # fmt: skip
    for name in ("astronaut.png", "coffee.jpg"):
        assert f"{out}/{_result(name)}: exists" in report[name]["error"], report[name]
    ours = _objects(s3, f"{prefix}/out")[_result("moon.png")]

    status, err = _upscale(engines, capsys, inputs, out, "--overwrite")
    assert status == 1 and "1 written, 2 failed" in err, err  # our own result redone, the foreign ones refused
    assert err.count("is not an earlier x4 result") == 2, err
    now = _objects(s3, f"{prefix}/out")
    for name, data in foreign.items():
        assert now[name] == before[name] and _get(s3, f"{prefix}/out/{name}") == data, name
    assert now[_result("moon.png")] != ours  # --overwrite replaced the earlier result of ours
    assert sorted(report) == names


@pytest.mark.slow
def test_local_inputs_to_a_bucket(s3, ray_s3, engines, photos, expected, prefix, capsys) -> None:
    out = f"s3://{BUCKET}/{prefix}/out/"  # a trailing '/' as a user may write it
    status, err = _upscale(engines, capsys, str(photos), out)
    assert status == 0 and "error" not in err, err
    names = sorted(p.name for p in photos.iterdir())
    assert sorted(_objects(s3, f"{prefix}/out")) == sorted([*map(_result, names), REPORT_NAME])
    for name in names:
        _check_result(_get(s3, f"{prefix}/out/{_result(name)}"), photos, expected, name)
    report = _report(_get(s3, f"{prefix}/out/{REPORT_NAME}").decode())
    assert all(line["status"] == "written" and line["output"].startswith(f"s3://{BUCKET}/") for line in report.values())
    assert sorted(report) == names


@pytest.mark.slow
def test_a_bucket_to_local_outputs(s3, ray_s3, engines, photos, expected, prefix, tmp_path, capsys) -> None:
    names = _put_inputs(s3, photos, prefix, damaged=False)
    out = tmp_path / "out"
    status, err = _upscale(engines, capsys, f"s3://{BUCKET}/{prefix}/in/", str(out))
    assert status == 0 and "error" not in err, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*map(_result, names), REPORT_NAME])
    for name in names:
        _check_result((out / _result(name)).read_bytes(), photos, expected, name)
    report = _report((out / REPORT_NAME).read_text())
    assert sorted(report) == names and all(line["status"] == "written" for line in report.values()), report
    assert all(line["input"].startswith(f"s3://{BUCKET}/{prefix}/in/") for line in report.values())
