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
