"""Error lines show only printable text, whatever the input quotes (a data file's bytes, a
path): control characters are escaped as repr escapes them, and quoted content is cut short."""

import pytest

from famerec.data.readers import read_sequence_file, read_table
from famerec.errors import DataError, printable
from tests.test_cli import assert_one_line_error, run_cli


def test_binary_table_input_is_escaped_in_the_error_line(tmp_path, capsys):
    table = tmp_path / "noise.csv"
    noise = bytes(b for b in range(256) if b not in b",\n") * 4  # one long header cell
    table.write_bytes(b"\x1b]0;owned\x07\x1b[31muser\rx\xff" + noise + b"\n1,2,3\n")
    out = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--data", str(table), "--format", "table", "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "no column 'user'", r"\x1b]0;owned\x07\x1b[31muser\rx")
    assert err.endswith("\n") and err[:-1].isprintable()
    assert len(err) < 600 and "more characters" in err
    with pytest.raises(DataError) as error:  # the same message from Python
        read_table(table)
    assert str(error.value).isprintable() and "\\x1b]0;owned" in str(error.value)


def test_quoted_ids_and_timestamps_are_escaped(tmp_path):
    sequences = tmp_path / "s.txt"
    sequences.write_text("1 2 \x1b[2J" + "3" * 500 + "\n")
    with pytest.raises(DataError) as error:
        read_sequence_file(sequences)
    message = str(error.value)
    assert message.startswith(f"{sequences}:1: '\\x1b[2J333") and message.isprintable()
    assert "more characters) is not an integer id" in message
    table = tmp_path / "t.csv"
    table.write_text("user,item,timestamp\nu,i,1\nu,j,\x1b]0;x\x07\n")
    with pytest.raises(DataError, match="cannot read timestamp") as error:
        read_table(table, kcore=0)
    assert "'\\x1b]0;x\\x07'" in str(error.value) and str(error.value).isprintable()


def test_printable_escapes_like_repr_and_cuts():
    assert printable("a\x1b[2Jb\nc\u202ed é\t") == "a\\x1b[2Jb\\nc\\u202ed é\\t"
    assert printable("x" * 250) == "x" * 200 + "... (50 more characters)"
    assert printable("x" * 250, limit=None) == "x" * 250
