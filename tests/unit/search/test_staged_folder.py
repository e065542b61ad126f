"""`aeopt.files.staged_folder`: outputs join their folder all at once or not at all (what `aeopt train`
and `aeopt report` rely on when stopped part-way), on the real file system."""

from __future__ import annotations

import pytest

from aeopt.errors import AeoptError
from aeopt.files import staged_folder


def _partials(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_a_new_folder_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "deep" / "run"
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as staging:
        (staging / "checkpoint.pt").write_text("weights")
        raise KeyboardInterrupt  # Ctrl-C before metrics.json
    assert not out.exists() and not _partials(out.parent)

    with staged_folder(out) as staging:
        (staging / "checkpoint.pt").write_text("weights")
        (staging / "metrics.json").write_text("{}")
        assert not out.exists()  # nothing visible until the block completes
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]
    assert not _partials(out.parent)


def test_an_existing_folder_is_left_as_it_was_when_stopped(tmp_path):
    out = tmp_path / "rep"
    (out / "checkpoints").mkdir(parents=True)
    (out / "report.html").write_text("old page")
    (out / "checkpoints" / "best.pt").write_text("cached")
    with pytest.raises(RuntimeError), staged_folder(out) as staging:
        # The earlier files are there to reuse (hard links); replacing one leaves the original alone.
        assert (staging / "checkpoints" / "best.pt").read_text() == "cached"
        (staging / "report.html").unlink()
        (staging / "report.html").write_text("new page, half")
        raise RuntimeError("a failure part-way")
    assert (out / "report.html").read_text() == "old page"
    assert (out / "checkpoints" / "best.pt").read_text() == "cached"
    assert not _partials(tmp_path)


def test_a_completed_block_replaces_files_and_merges_folders(tmp_path):
    out = tmp_path / "rep"
    (out / "checkpoints").mkdir(parents=True)
    (out / "report.html").write_text("old page")
    (out / "notes.txt").write_text("the user's")
    (out / "checkpoints" / "best.pt").write_text("cached")
    with staged_folder(out, keep_existing=False) as staging:
        assert list(staging.iterdir()) == []
        (staging / "report.html").write_text("new page")
        (staging / "checkpoints").mkdir()
        (staging / "checkpoints" / "denoising.pt").write_text("new")
    assert (out / "report.html").read_text() == "new page"
    assert (out / "notes.txt").read_text() == "the user's"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "denoising.pt"]
    assert not _partials(tmp_path)


def test_a_file_in_the_way_is_a_one_line_error(tmp_path):
    (tmp_path / "rep").write_text("not a folder")
    with pytest.raises(AeoptError, match="a file, not a folder"), staged_folder(tmp_path / "rep"):
        pass
