"""Paths and names: realpath never leaves the root, names are NFC both ways, at most 255
bytes, and never '.', '..', or containing NUL.

macOS clients send names in NFD and Linux ones in NFC: either finds the same file, and
listings give NFC. A path a client sends cannot name anything outside its account.
"""

from __future__ import annotations

import unicodedata

import pytest

from gateway.fs.errors import FileExists, InvalidName, NoSuchFile
from tests.fs.contract.subject import CREATE, EXCLUSIVE, Subject


@pytest.mark.parametrize(
    ("path", "real"),
    [
        ("/", "/"),
        (".", "/"),
        ("", "/"),
        ("/../../..", "/"),
        ("../..", "/"),
        ("a/../../b", "/b"),
        ("/base/x/../y/.", "/base/y"),
        ("//base///y//", "/base/y"),
        ("base/name", "/base/name"),
    ],
)
def test_realpath_is_canonical_and_inside_the_root(subject: Subject, path: str, real: str) -> None:
    """'.' and '..' are resolved textually, '..' stops at the root, the last component need
    not exist, and relative paths start at the root."""
    subject.mkdir("/base")
    assert subject.run(subject.fs.realpath(path)) == real


def test_realpath_resolves_links(subject: Subject) -> None:
    """A path through links is given as the real path it names."""
    subject.mkdir("/d")
    subject.run(subject.fs.symlink("/ld", "d"))
    subject.run(subject.fs.symlink("/d/up", "../../.."))
    assert subject.run(subject.fs.realpath("/ld/new")) == "/d/new"
    assert subject.run(subject.fs.realpath("/ld")) == "/d"
    assert subject.run(subject.fs.realpath("/d/up")) == "/"


def test_dotdot_never_escapes_in_any_request(subject: Subject) -> None:
    """'..' above the root is the root, in OPEN and STAT as in realpath."""
    subject.mkdir("/base")
    subject.write("/base/f", b"data")
    assert subject.read("/../../../base/f") == b"data"
    with pytest.raises(NoSuchFile):
        subject.stat("/../../etc/passwd")
    subject.write("/../../escaped", b"here")
    assert subject.names("/") == ["base", "escaped"]


def test_nfd_names_are_stored_and_listed_in_nfc(subject: Subject, when: str) -> None:
    """A file created with an NFD name is listed in NFC and found by either form."""
    nfd = unicodedata.normalize("NFD", "Café-Ångström")
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfd != nfc
    subject.write("/" + nfd, b"unicode")
    subject.reach(when)
    assert subject.names("/") == [nfc]
    assert subject.read("/" + nfc) == b"unicode"
    assert subject.read("/" + nfd) == b"unicode"
    assert subject.stat("/" + nfd) == subject.stat("/" + nfc)


def test_nfc_and_nfd_are_one_name(subject: Subject, when: str) -> None:
    """An exclusive create in one form of a name taken in the other is FileExists."""
    nfd = unicodedata.normalize("NFD", "Répertoire")
    subject.write("/" + nfd, b"x")
    subject.reach(when)
    with pytest.raises(FileExists):
        subject.open("/" + unicodedata.normalize("NFC", nfd), EXCLUSIVE)


def test_directories_and_renames_normalize_too(subject: Subject) -> None:
    """mkdir and rename targets in NFD become NFC names."""
    subject.mkdir("/" + unicodedata.normalize("NFD", "Répertoire"))
    subject.write("/a", b"x")
    subject.run(subject.fs.rename("/a", "/" + unicodedata.normalize("NFD", "Ärger"), False))
    assert subject.names("/") == sorted(["Répertoire", "Ärger"])
    assert subject.stat("/Répertoire").kind == "dir"


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_names_of_255_bytes_work(subject: Subject, when: str, char: str) -> None:
    """A name of 255 bytes, in one- to four-byte characters, is created, listed and read."""
    size = len(char.encode())
    name = char * (255 // size) + "b" * (255 % size)
    assert len(name.encode()) == 255
    subject.write("/" + name, b"long")
    subject.reach(when)
    assert subject.names("/") == [name]
    assert subject.read("/" + name) == b"long"


@pytest.mark.parametrize("char", ["a", "😀"])
def test_names_over_255_bytes_are_refused(subject: Subject, char: str) -> None:
    """A name of more than 255 bytes is InvalidName for every request that makes one."""
    name = char * (256 // len(char.encode()) + 1)
    subject.write("/short", b"x")
    calls = [
        lambda: subject.open("/" + name, CREATE),
        lambda: subject.mkdir("/" + name),
        lambda: subject.run(subject.fs.symlink("/" + name, "short")),
        lambda: subject.run(subject.fs.rename("/short", "/" + name, False)),
    ]
    for call in calls:
        with pytest.raises(InvalidName):
            call()
    assert subject.names("/") == ["short"]


def test_a_name_with_nul_is_refused(subject: Subject) -> None:
    """A NUL inside a name is InvalidName; nothing is created."""
    with pytest.raises(InvalidName):
        subject.open("/bad\0name", CREATE)
    with pytest.raises(InvalidName):
        subject.mkdir("/bad\0dir")
    assert subject.names("/") == []


def test_names_are_case_sensitive(subject: Subject) -> None:
    """'File' and 'file' are two names."""
    subject.write("/File", b"upper")
    subject.write("/file", b"lower")
    subject.settle()
    assert subject.names("/") == ["File", "file"]
    assert (subject.read("/File"), subject.read("/file")) == (b"upper", b"lower")


@pytest.mark.parametrize(
    "name", [" ", "a b", "...", ".hidden", "-rf", "new\nline", "back\\slash", "*?[]", "~"]
)
def test_unusual_but_valid_names(subject: Subject, name: str) -> None:
    """Any name but '', '.', '..' and those with '/' or NUL is a name like another."""
    subject.write("/" + name, b"odd")
    subject.mkdir("/" + name + "-dir")
    subject.settle()
    assert subject.names("/") == sorted([name, name + "-dir"])
    assert subject.read("/" + name) == b"odd"
