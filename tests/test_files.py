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
        write_atomic(target, 42)  # neither text nor bytes: fails while writing the temporary file
    assert target.read_text() == '{"key": "old"}' and [p.name for p in tmp_path.iterdir()] == ["memo.json"]
