"""Files other processes read while they change are replaced whole: a reader sees the old or the new one."""
import pytest

from nbscale.files import write_atomic, write_json


def test_a_file_is_replaced_whole_and_no_temporary_file_stays(tmp_path):
    target = tmp_path / "deep" / "state.json"
    write_json(target, {"jobs": [1]})
    write_json(target, {"jobs": [1, 2]})
    assert target.read_text() == '{"jobs": [1, 2]}'
    write_atomic(target, b"\x00raw")
    assert target.read_bytes() == b"\x00raw"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "memo.json"
    write_json(target, {"key": "old"})
    with pytest.raises(TypeError):
        write_json(target, {"key": object()})  # not JSON: fails before anything is written
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # neither text nor bytes: refused before any file is made
    assert target.read_text() == '{"key": "old"}' and [p.name for p in tmp_path.iterdir()] == ["memo.json"]


def test_a_secret_file_is_never_readable_by_others(tmp_path):
    """The serving front's config holds its bearer secret: created 0600, not created open and narrowed after."""
    import os
    import stat

    target = tmp_path / "front.json"
    before = os.umask(0)  # no umask to hide a wrong mode
    try:
        write_json(target, {"secret": "s"}, mode=0o600)
        write_json(tmp_path / "jobs.json", [])
    finally:
        os.umask(before)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "jobs.json").stat().st_mode) == 0o666  # others' files keep what the umask allows


def test_a_streamed_file_appears_only_when_whole(tmp_path):
    """A download or a decompressed file: written under a temporary name, renamed into place at the end."""
    from nbscale.files import replacing

    target = tmp_path / "cache" / "train-images.idx"
    with replacing(target) as first, replacing(target) as second:  # two writers of one file never share a partial
        assert first != second and first.parent == second.parent == target.parent
        first.write_bytes(b"one")
        assert not target.exists()  # nothing published mid-write
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the last to finish wins, whole (the inner block ended first)
    with pytest.raises(EOFError), replacing(target) as partial:
        partial.write_bytes(b"half")
        raise EOFError("truncated gzip")
    assert target.read_bytes() == b"one" and sorted(p.name for p in target.parent.iterdir()) == ["train-images.idx"]
