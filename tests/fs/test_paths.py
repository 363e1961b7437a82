"""Path normalization: NFC, '..' never escapes the root, bad names are refused clearly."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.fs.errors import InvalidName
from gateway.fs.paths import join, split


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/", ()),
        ("", ()),
        (".", ()),
        ("/a/b/../c", ("a", "c")),
        ("../../etc/passwd", ("etc", "passwd")),
        ("/a/./b//c/", ("a", "b", "c")),
        ("/..", ()),
    ],
)
def test_split(path: str, parts: tuple[str, ...]) -> None:
    """Paths resolve textually inside the root."""
    assert split(path) == parts


def test_names_are_nfc() -> None:
    """An NFD name is stored and reported as NFC."""
    nfd = unicodedata.normalize("NFD", "café")
    assert split("/" + nfd) == ("café",)
    assert split("/" + nfd)[0] == unicodedata.normalize("NFC", nfd)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/a\0b", "cannot contain"),
        ("/" + "x" * 256, "longer than 255 bytes"),
        ("/" + "é" * 128, "longer than 255 bytes"),
    ],
)
def test_bad_names(path: str, message: str) -> None:
    """Bad names are refused with a message saying why."""
    with pytest.raises(InvalidName, match=message):
        split(path)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "ü"]), max_size=12))
def test_never_escapes_the_root(components: list[str]) -> None:
    """Whatever mix of '..' a client sends, the result stays under the root and is canonical."""
    parts = split("/".join(components))
    assert ".." not in parts and "." not in parts
    assert split(join(parts)) == parts
