"""`aeopt.files`: an output path that cannot be written is one AeoptError line naming it, at the
check before the work (`output_file`, `output_folder`) and at the write itself, with nothing left
behind; on the real file system."""

from __future__ import annotations

import errno
import os

import pytest

from aeopt.errors import AeoptError
from aeopt.files import (
    atomic_write_text,
    cannot_write,
    make_folder,
    output_file,
    output_folder,
    staged_folder,
)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "best.yaml").mkdir()
    return tmp_path


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_a_folder_where_a_file_goes(tree):
    for check in (output_file, lambda p: atomic_write_text(p, "x")):
        with pytest.raises(AeoptError) as err:
            check(tree / "best.yaml")
        assert _one_line(err) == (f"cannot write {tree}/best.yaml: it is a folder; give a file name "
                                  "(inside it, or elsewhere)")
    assert sorted(p.name for p in tree.iterdir()) == ["afile", "best.yaml"]  # no temporary file left


@pytest.mark.parametrize("target", ["afile/best.yaml", "afile/deeper/best.yaml"])
def test_a_file_where_a_folder_goes(tree, target):
    for check in (output_file, output_folder, make_folder, lambda p: atomic_write_text(p, "x"),
                  lambda p: staged_folder(p).__enter__()):
        with pytest.raises(AeoptError) as err:
            check(tree / target)
        assert _one_line(err) == (f"cannot write {tree}/{target}: {tree}/afile is a file, not a folder; "
                                  "choose another path, or move that file away")
    assert sorted(p.name for p in tree.iterdir()) == ["afile", "best.yaml"]


def test_a_file_given_as_the_output_folder(tree):
    for check in (output_folder, lambda p: staged_folder(p).__enter__()):
        with pytest.raises(AeoptError, match=r"afile: a file, not a folder; pass a folder for the outputs"):
            check(tree / "afile")


def test_a_folder_in_the_way_when_the_staged_files_move_in(tree):
    out = tree / "run"
    (out / "metrics.json").mkdir(parents=True)  # made by someone else while the run went on
    with pytest.raises(AeoptError) as err, staged_folder(out) as staging:
        (staging / "metrics.json").rmdir()
        (staging / "metrics.json").write_text("{}")
    assert _one_line(err).startswith(f"cannot write {out}/metrics.json: ")
    assert not [p for p in tree.iterdir() if ".partial-" in p.name]


def test_every_os_error_reads_as_what_to_do(tmp_path):
    path = tmp_path / "out.yaml"
    for code, says in [(errno.EACCES, "permission denied; choose a folder you can write to"),
                       (errno.ENOSPC, "no space left on the disk; free some, or choose another disk"),
                       (errno.EIO, "Input/output error; choose another path")]:
        exc = OSError(code, os.strerror(code), str(path))
        assert str(cannot_write(path, exc)) == f"cannot write {path}: {says}"


def test_paths_that_can_be_written_pass_and_create_nothing(tree):
    assert output_file(tree / "new" / "best.yaml") == tree / "new" / "best.yaml"
    assert output_folder(tree / "new" / "run") == tree / "new" / "run"
    assert output_folder(tree / "best.yaml") == tree / "best.yaml"  # an existing folder
    assert not (tree / "new").exists()
