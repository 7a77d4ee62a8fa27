"""Secret files: one trailing line ending (LF or CRLF) is not part of the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthmgr.secret_files import SecretFileError, read_secret_file


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"s3cret", "s3cret"),
        (b"s3cret\n", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b"s3cret\n\n", "s3cret\n"),  # only one line ending goes
        (b"s3cret\r", "s3cret\r"),  # a lone CR is no line ending
        (b" s3cret \n", " s3cret "),  # other whitespace is part of it
    ],
)
def test_the_rule(tmp_path: Path, content: bytes, secret: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert read_secret_file(path) == secret


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"\n", "is empty"), (b"\r\n", "is empty"), (b"\xff\xfe", "cannot read")],
)
def test_unusable_files_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SecretFileError, match=message) as caught:
        read_secret_file(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r"cannot read .*: No such file"):
        read_secret_file(tmp_path / "nope")


def test_line_endings_inside_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"a\r\nb\rc\r\n")
    assert read_secret_file(path) == "a\r\nb\rc"
