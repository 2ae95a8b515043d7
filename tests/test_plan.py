"""Planning and naming (runtime/jobs/plan.py): which files INPUT names and where each result goes, for local
paths and object-storage URIs, decided and checked before any model loads. Pure functions on real folders;
an `s3://` bucket is pyarrow's local filesystem rooted in a temporary folder (what `storage.remote` returns
for the bucket), so the listing code runs for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import JobError
from runtime.jobs import storage
from runtime.jobs.plan import is_remote, output_for, plan_outputs, plan_run, previous_results, resolve_inputs
from runtime.settings import Settings

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301010018dd8db0"
    "0000000049454e44ae426082"
)


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(PNG_1x1)


# Naming: output_for


@pytest.mark.parametrize(
    ("source", "output", "settings", "expected"),
    [
        ("/d/a.png", None, Settings(), "/d/a_x4.png"),  # beside the input
        ("/d/a.jpg", None, Settings(ext="png"), "/d/a_x4.png"),
        ("/d/a.jpg", None, Settings(ext=".png"), "/d/a_x4.png"),  # with or without the dot
        ("/d/a.png", None, Settings(suffix="-big"), "/d/a-big.png"),
        ("/d/a.tar.png", None, Settings(), "/d/a.tar_x4.png"),  # only the last suffix is the format
        ("/d/a.png", "/o/b.png", Settings(), "/o/b.png"),  # one input: OUTPUT is the file, suffix or not
        ("/d/a.png", "/o/b.jpg", Settings(ext="png"), "/o/b.png"),  # --ext wins over OUTPUT's extension
        ("/d/a.png", "/o/b", Settings(ext="webp"), "/o/b.webp"),
    ],
)
def test_one_local_input(source, output, settings, expected) -> None:
    assert output_for(source, True, output, settings) == Path(expected)


def test_a_folder_output_gets_the_input_name(tmp_path) -> None:
    assert output_for("/d/a.png", True, tmp_path, Settings()) == tmp_path / "a_x4.png"  # an existing folder
    assert output_for("/d/a.png", False, "/new", Settings(ext="jpg")) == Path("/new/a_x4.jpg")  # several inputs


def test_a_trailing_slash_names_a_folder_for_one_local_input(tmp_path) -> None:
    new = str(tmp_path / "new") + os.sep  # as typed: `upscale.py a.png new/`, the folder not there yet
    assert output_for("/d/a.png", True, new, Settings()) == tmp_path / "new" / "a_x4.png"
    assert plan_outputs([Path("/d/a.png")], True, new, Settings()) == [tmp_path / "new" / "a_x4.png"]  # made later


@pytest.mark.parametrize(
    ("source", "single", "output", "settings", "expected"),
    [
        ("/d/a.png", True, "s3://b/o.png", Settings(), "s3://b/o.png"),
        ("/d/a.png", True, "s3://b/o.jpg", Settings(ext="png"), "s3://b/o.png"),
        ("/d/a.png", True, "s3://b/o/", Settings(), "s3://b/o/a_x4.png"),  # a trailing '/' names a folder
        ("s3://b/in/a.png", False, "s3://b/o", Settings(), "s3://b/o/a_x4.png"),
        ("s3://b/in/a.png", False, "s3://b/o/", Settings(suffix="", ext="jpg"), "s3://b/o/a.jpg"),
        ("/d/a.png", False, "gs://b/o", Settings(), "gs://b/o/a_x4.png"),
        ("/d/a.png", True, "S3://b/o.png", Settings(), "S3://b/o.png"),  # schemes in any case
    ],
)
def test_object_storage_outputs_stay_uris(source, single, output, settings, expected) -> None:
    target = output_for(source, single, output, settings)
    assert target == expected and isinstance(target, str)  # a Path would turn s3://b into s3:/b


def test_what_counts_as_remote() -> None:
    assert is_remote("s3://b/k") and is_remote("GS://b") and is_remote("gcs://b/k")
    assert not is_remote("/s3/b") and not is_remote(Path("s3://b/k")) and not is_remote("http://b/k")


# Checking: plan_outputs


def test_two_inputs_writing_one_file_are_refused_naming_both() -> None:
    with pytest.raises(JobError, match=r"x/a.jpg and x/a.png would both write o/a_x4.png; nothing was done"):
        plan_outputs([Path("x/a.jpg"), Path("x/a.png")], False, Path("o"), Settings(ext="png"))
    with pytest.raises(JobError, match=r"x/a.png and y/a.png would both write o/a_x4.png"):
        plan_outputs([Path("x/a.png"), Path("y/a.png")], False, Path("o"), Settings())
    with pytest.raises(JobError, match=r"s3://b/x/a.jpg and s3://b/y/a.png would both write s3://b/o/a_x4.png"):
        plan_outputs(["s3://b/x/a.jpg", "s3://b/y/a.png"], False, "s3://b/o", Settings(ext="png"))
    # Beside their inputs, the same names in two folders are two files.
    assert plan_outputs([Path("x/a.png"), Path("y/a.png")], False, None, Settings()) == [Path("x/a_x4.png"), Path("y/a_x4.png")]


def test_two_spellings_of_one_file_are_one_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    # Beside their inputs: 'a_x4.png' and '<tmp>/sub/../a_x4.png' differ as strings, not as files.
    with pytest.raises(JobError, match="would both write"):
        plan_outputs([Path("a.png"), tmp_path / "sub" / ".." / "a.png"], False, None, Settings())


def test_formats_that_cannot_be_written_are_refused_before_any_work(tmp_path) -> None:
    with pytest.raises(JobError, match=r"--ext xyz: cannot write that format \(choose from .bmp, "):
        plan_outputs([Path("a.png")], False, tmp_path, Settings(ext="xyz"))
    with pytest.raises(JobError, match=r"o: unknown output format ''"):  # one input, OUTPUT without an extension
        plan_outputs([Path("a.png")], True, tmp_path / "o", Settings())
    with pytest.raises(JobError, match=r"unknown output format '.gif'"):
        plan_outputs([Path("a.png")], True, tmp_path / "o.gif", Settings())
    with pytest.raises(JobError, match=r"a_x4: unknown output format ''"):  # an input without one, beside it
        plan_outputs([Path("d/a")], False, None, Settings())


def test_a_single_output_needs_its_folder(tmp_path) -> None:
    with pytest.raises(JobError, match=f"output folder {tmp_path / 'missing'} does not exist"):
        plan_outputs([Path("a.png")], True, tmp_path / "missing" / "o.png", Settings())
    # A folder OUTPUT of a multi-file run is made later (make_output_folder); object storage has no folders.
    assert plan_outputs([Path("a.png")], False, tmp_path / "missing", Settings()) == [tmp_path / "missing" / "a_x4.png"]
    assert plan_outputs([Path("a.png")], True, "s3://b/none/o.png", Settings()) == ["s3://b/none/o.png"]


# Earlier results: previous_results


def test_earlier_results_are_names_with_the_suffix_beside_their_input() -> None:
    sources = [Path("d/a.png"), Path("d/a_x4.png"), Path("d/b_x4.png"), Path("e/a_x4.jpg"), Path("d/a_x4_x4.png")]
    # b_x4 has no b beside it, e/a_x4 no e/a; a_x4_x4 is a_x4's result, and a_x4 is an input too.
    assert previous_results(sources, "_x4") == [Path("d/a_x4.png"), Path("d/a_x4_x4.png")]
    assert previous_results(sources, "") == []  # without a suffix no name says "result"
    assert previous_results([Path("d/a.png"), Path("d/a-big.jpg")], "-big") == [Path("d/a-big.jpg")]


# Inputs: resolve_inputs and plan_run on a real folder


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder as a user leaves it: photos, an earlier result, a temporary of a killed run, a video, a note,
    a sub-folder and a dangling link."""
    folder = tmp_path / "photos"
    touch(folder, "a.png", "a_x4.png", "b.jpg", ".a_x4.k3j9a.part.png", "clip.mp4", "notes.txt")
    (folder / "sub").mkdir()
    touch(folder / "sub", "c.png")
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    return folder


def test_a_folder_run_plans_its_images_and_says_what_it_passed_over(folder, tmp_path) -> None:
    plan = plan_run(str(folder), tmp_path / "out", Settings())
    assert plan.pairs == [(folder / "a.png", tmp_path / "out" / "a_x4.png"), (folder / "b.jpg", tmp_path / "out" / "b_x4.jpg")]
    assert not plan.single and [Path(p).name for p in plan.earlier] == ["a_x4.png"]
    reasons = {p.name: why for p, why in plan.skipped}
    assert reasons.keys() == {".a_x4.k3j9a.part.png", "clip.mp4", "gone.png", "notes.txt", "sub"}
    assert reasons["sub"] == "a folder: its images are not taken (use --recursive)"
    assert "temporary file of an interrupted run" in reasons[".a_x4.k3j9a.part.png"]
    assert reasons["clip.mp4"].startswith("a video: upscale it on its own")
    assert reasons["gone.png"] == "a broken link"
    assert "unsupported file type '.txt'" in reasons["notes.txt"]


def test_one_file_is_planned_even_when_its_name_looks_like_a_result(folder) -> None:
    plan = plan_run(str(folder / "a_x4.png"), None, Settings())
    assert plan.single and plan.pairs == [(folder / "a_x4.png", folder / "a_x4_x4.png")] and plan.earlier == []


def test_a_glob_is_a_folder_run_over_what_matches(folder, tmp_path) -> None:
    plan = plan_run(str(folder / "*.png"), tmp_path / "out", Settings(suffix="_big"))
    assert [(s.name, t.name) for s, t in plan.pairs] == [("a.png", "a_big.png"), ("a_x4.png", "a_x4_big.png")]
    assert not plan.single and [p.name for p, _ in plan.skipped] == ["gone.png"]  # a glob's '*' skips dot files


def test_a_recursive_run_keeps_each_result_in_its_sub_folder_and_never_walks_its_output(tmp_path) -> None:
    folder = tmp_path / "in"
    touch(folder, "a.png")
    touch(folder / "sub", "b.png")
    touch(folder / "sub" / "deeper", "c.jpg")
    touch(folder / "out", "a_x4.png")  # OUTPUT inside INPUT, with an earlier run's result: not an input
    plan = plan_run(str(folder), folder / "out", Settings(recursive=True))
    assert [(str(s.relative_to(folder)), str(t.relative_to(folder))) for s, t in plan.pairs] == [
        ("a.png", "out/a_x4.png"), ("sub/b.png", "out/sub/b_x4.png"), ("sub/deeper/c.jpg", "out/sub/deeper/c_x4.jpg"),
    ]  # fmt: skip
    assert plan.skipped == [] and not plan.single


@pytest.mark.parametrize(
    ("spec", "message"),
    [("missing.png", "no such file or folder"), ("empty", "no images in this folder"), ("*.webp", "no image files match")],
)
def test_inputs_that_name_no_image_are_refused(tmp_path, spec, message) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(JobError, match=message):
        resolve_inputs(str(tmp_path / spec))


def test_an_empty_folder_says_why_its_files_were_passed_over(tmp_path) -> None:
    touch(tmp_path, "clip.mov")
    with pytest.raises(JobError, match=r"no images in this folder \(.*\); clip.mov: a video"):
        resolve_inputs(str(tmp_path))


# Object storage: plan_run on an s3:// prefix


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> Path:
    """`s3://bucket/...` served from tmp_path/bucket by pyarrow's local filesystem."""
    from pyarrow import fs

    root = tmp_path / "storage"
    root.mkdir()
    monkeypatch.setattr(storage, "_bucket_filesystem", lambda _root: fs.SubTreeFileSystem(str(root), fs.LocalFileSystem()))
    return root / "bucket"


def test_an_object_prefix_plans_uris_into_an_object_prefix(bucket) -> None:
    touch(bucket / "in", "a.png", "b.jpg", "notes.txt")
    plan = plan_run("s3://bucket/in/", "s3://bucket/out/", Settings(ext="png"))
    assert plan.pairs == [("s3://bucket/in/a.png", "s3://bucket/out/a_x4.png"), ("s3://bucket/in/b.jpg", "s3://bucket/out/b_x4.png")]
    assert not plan.single and [uri for uri, _ in plan.skipped] == ["s3://bucket/in/notes.txt"]
    assert plan.skipped[0][1].startswith("unsupported file type '.txt'")


def test_one_object_is_a_single_run(bucket) -> None:
    touch(bucket / "in", "a.png")
    plan = plan_run("s3://bucket/in/a.png", "s3://bucket/out/b.jpg", Settings())
    assert plan.single and plan.pairs == [("s3://bucket/in/a.png", "s3://bucket/out/b.jpg")]


def test_earlier_results_in_an_object_prefix_are_left_out(bucket) -> None:
    touch(bucket / "in", "a.png", "a_x4.png")
    plan = plan_run("s3://bucket/in/", "s3://bucket/out/", Settings())
    assert plan.pairs == [("s3://bucket/in/a.png", "s3://bucket/out/a_x4.png")]
    assert [str(e) for e in plan.earlier] == ["s3://bucket/in/a_x4.png"]
