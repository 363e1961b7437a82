"""Directories on a grid of real storage cores: entries, names, read-only views, races."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Coroutine
from typing import Any, TypeVar

import cbor2
import pytest
from attrs import evolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
)
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import (
    FORMAT_VERSION,
    BadChild,
    BadName,
    ChildCap,
    ChildExists,
    CorruptDirectory,
    DirectoryNode,
    Entry,
    EntryMetadata,
    NoSuchChild,
    move,
    normalize_name,
    pack_contents,
    unpack_contents,
)
from gateway.objects.errors import BadCapability, NotWritable
from gateway.objects.mutable import MutableClient
from tests.objects.grid import GridClient, intercept, make_grid, run

T = TypeVar("T")

PARAMS = fmt.EncodingParams(k=2, happy=3, n=4, segment_size=64 * 1024)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)


def meta(kind: str = "file", t: float = 1000.0, **more: Any) -> EntryMetadata:
    """Metadata with fixed times (so round trips compare exactly)."""
    return EntryMetadata(kind=kind, mtime=t, ctime=t + 1, **more)  # type: ignore[arg-type]


class World:
    """A grid, a clock and a client: what one gateway process has."""

    def __init__(self, grid: list[GridClient] | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.grid = grid if grid is not None else make_grid(4)
        self.client = MutableClient(self.grid, SECRETS, PARAMS)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this world's grid (advancing the clock when it has latency)."""
        latency = any(g.clock is not None and g.latency for g in self.grid)
        return run(coroutine, self.clock if latency else None)

    def mkroot(
        self, entries: dict[str, tuple[ChildCap | None, EntryMetadata]] | None = None
    ) -> DirectoryNode:
        """A new directory."""
        return self.run(DirectoryNode.create(self.client, entries, clock=self.clock))

    def open(self, cap: DirectoryWriteCap | DirectoryReadCap | str) -> DirectoryNode:
        """Open an existing directory through this world's client."""
        return DirectoryNode.open(self.client, cap, clock=self.clock)

    def plaintext(self, node: DirectoryNode) -> bytes:
        """The directory's serialized contents, as the mutable object holds them."""
        return self.run(self.client.read(node.cap.node))[0]


@pytest.fixture
def world() -> World:
    """A fresh four-server grid with its own clock and client."""
    return World()


def every_kind_of_child() -> dict[str, tuple[ChildCap | None, EntryMetadata]]:
    """One entry per kind of linkable capability, plus a symlink."""
    return {
        "literal": (LiteralCap(b"tiny"), meta(size=4)),
        "immutable": (ImmutableReadCap(b"k" * 32, b"u" * 32, 3, 10, 5000), meta(size=5000)),
        "mutable": (MutableWriteCap.generate(), meta(mode=0o600)),
        "mutable-ro": (MutableWriteCap.generate().get_read_cap(), meta(no_write=True)),
        "subdir": (DirectoryWriteCap.generate(), meta("dir", mode=0o755)),
        "subdir-ro": (DirectoryWriteCap.generate().get_read_cap(), meta("dir")),
        "link": (None, EntryMetadata.symlink_to("../elsewhere/é", 5.5)),
    }


# --- round trips -------------------------------------------------------------


def test_create_empty_and_with_entries(world: World) -> None:
    """A new directory lists what it was created with, through a fresh node and client."""
    assert world.run(world.mkroot().list()) == {}
    children = every_kind_of_child()
    root = world.mkroot(children)
    listed = world.run(World(world.grid).open(root.cap).list())
    assert {n: (e.cap, e.metadata) for n, e in listed.items()} == children


def test_add_and_get_every_kind(world: World) -> None:
    """Each kind of child round-trips through add and get, write caps included."""
    root = world.mkroot()
    for name, (cap, metadata) in every_kind_of_child().items():
        added = world.run(root.add(name, cap, metadata))
        assert (added.name, added.cap, added.metadata) == (name, cap, metadata)
        got = world.run(world.open(root.cap).get(name))
        assert got == added
        assert got.kind == metadata.kind
        assert got.read_cap == (None if cap is None else cap.get_read_cap())


def test_add_without_metadata_uses_kind_and_clock(world: World) -> None:
    """Missing metadata gets the cap's kind and the clock's time."""
    world.clock.advance(1234.5)
    root = world.mkroot()
    entry = world.run(root.add("d", DirectoryWriteCap.generate()))
    assert entry.metadata == EntryMetadata(kind="dir", mtime=1234.5, ctime=1234.5)
    assert world.run(root.add("f", LiteralCap(b""))).kind == "file"
    assert world.run(root.get("f")).metadata.mtime == 1234.5


def test_add_refuses_to_overwrite_when_told(world: World) -> None:
    """overwrite=False raises ChildExists and keeps the old entry; the default replaces it."""
    root = world.mkroot({"a": (LiteralCap(b"1"), meta())})
    with pytest.raises(ChildExists, match="an entry named 'a' already exists"):
        world.run(root.add("a", LiteralCap(b"2"), meta(), overwrite=False))
    assert world.run(root.get("a")).cap == LiteralCap(b"1")
    world.run(root.add("a", LiteralCap(b"2"), meta()))
    assert world.run(root.get("a")).cap == LiteralCap(b"2")


def test_add_many_is_one_publish_and_all_or_nothing(world: World) -> None:
    """add_many publishes once; without overwrite a single taken name adds none of them."""
    root = world.mkroot({"taken": (LiteralCap(b"t"), meta())})
    before = world.grid[0].count("read_test_write")
    batch = {f"f{i}": (LiteralCap(b"%d" % i), meta()) for i in range(50)}
    added = world.run(root.add_many(batch))
    assert set(added) == set(batch)
    assert world.grid[0].count("read_test_write") == before + 1
    with pytest.raises(ChildExists, match="'taken'"):
        world.run(
            root.add_many(
                {"new": (LiteralCap(b"n"), meta()), "taken": (LiteralCap(b"x"), meta())}, False
            )
        )
    listed = world.run(root.list())
    assert "new" not in listed and len(listed) == 51


def test_remove_returns_the_entry(world: World) -> None:
    """remove unlinks and returns the entry; removing a missing name is NoSuchChild."""
    cap = MutableWriteCap.generate()
    root = world.mkroot({"m": (cap, meta(mode=0o640)), "other": (LiteralCap(b"o"), meta())})
    removed = world.run(root.remove("m"))
    assert (removed.name, removed.cap, removed.metadata) == ("m", cap, meta(mode=0o640))
    assert set(world.run(root.list())) == {"other"}
    with pytest.raises(NoSuchChild, match="no entry named 'm'"):
        world.run(root.remove("m"))
    with pytest.raises(NoSuchChild, match="no entry named 'ghost'"):
        world.run(root.get("ghost"))


def test_rename_with_and_without_overwrite(world: World) -> None:
    """rename moves an entry; onto a taken name it replaces only when told to."""
    root = world.mkroot({"a": (LiteralCap(b"A"), meta()), "b": (LiteralCap(b"B"), meta())})
    with pytest.raises(ChildExists, match="'b' already exists"):
        world.run(root.rename("a", "b", overwrite=False))
    assert {n: e.cap for n, e in world.run(root.list()).items()} == {
        "a": LiteralCap(b"A"),
        "b": LiteralCap(b"B"),
    }
    renamed = world.run(root.rename("a", "c", overwrite=False))
    assert (renamed.name, renamed.cap) == ("c", LiteralCap(b"A"))
    world.run(root.rename("c", "b"))
    assert {n: e.cap for n, e in world.run(root.list()).items()} == {"b": LiteralCap(b"A")}
    assert world.run(root.rename("b", "b", overwrite=False)).cap == LiteralCap(b"A")
    with pytest.raises(NoSuchChild):
        world.run(root.rename("a", "z"))


def test_rename_keeps_write_caps(world: World) -> None:
    """A renamed writable child is still writable through the new name."""
    cap = DirectoryWriteCap.generate()
    root = world.mkroot({"d": (cap, meta("dir"))})
    world.run(root.rename("d", "e"))
    assert world.run(world.open(root.cap).get("e")).cap == cap


def test_mkdir_links_a_working_child(world: World) -> None:
    """mkdir creates a directory, links it by its write cap, and returns a usable node."""
    world.clock.advance(50)
    root = world.mkroot()
    child = world.run(root.mkdir("sub"))
    assert not child.read_only
    world.run(child.add("inner", LiteralCap(b"i"), meta()))
    entry = world.run(root.get("sub"))
    assert entry.cap == child.cap and entry.metadata == EntryMetadata(
        kind="dir", mtime=50, ctime=50
    )
    reopened = world.run(world.open(root.cap).child("sub"))
    assert set(world.run(reopened.list())) == {"inner"}
    with pytest.raises(ChildExists):
        world.run(root.mkdir("sub"))
    with pytest.raises(BadChild, match="kind 'dir'"):
        world.run(root.mkdir("x", meta("file")))
    sub2 = world.run(root.mkdir("sub2", meta("dir", mode=0o700)))
    assert world.run(root.get("sub2")).metadata.mode == 0o700
    assert world.run(sub2.list()) == {}


def test_set_metadata(world: World) -> None:
    """set_metadata changes only the named fields; kind cannot change; unknown fields fail."""
    root = world.mkroot({"f": (LiteralCap(b"f"), meta(mode=0o644, size=1))})
    updated = world.run(root.set_metadata("f", mtime=77.25, mode=0o600, no_write=True))
    assert updated.metadata == EntryMetadata(
        kind="file", mtime=77.25, ctime=1001.0, mode=0o600, no_write=True, size=1
    )
    assert world.run(world.open(root.cap).get("f")).metadata == updated.metadata
    with pytest.raises(BadChild, match="kind cannot be changed"):
        world.run(root.set_metadata("f", kind="dir"))
    with pytest.raises(TypeError):
        world.run(root.set_metadata("f", colour="red"))
    with pytest.raises(NoSuchChild):
        world.run(root.set_metadata("nope", mtime=1))


def test_move_between_directories(world: World) -> None:
    """move links the entry in the destination and unlinks it from the source."""
    cap = MutableWriteCap.generate()
    src = world.mkroot({"f": (cap, meta(mode=0o600)), "keep": (LiteralCap(b"k"), meta())})
    dst = world.mkroot({"taken": (LiteralCap(b"t"), meta())})
    moved = world.run(move(src, "f", dst, "g"))
    assert (moved.name, moved.cap, moved.metadata) == ("g", cap, meta(mode=0o600))
    assert set(world.run(src.list())) == {"keep"}
    assert world.run(world.open(dst.cap).get("g")).cap == cap
    with pytest.raises(ChildExists):
        world.run(move(src, "keep", dst, "taken", overwrite=False))
    assert set(world.run(src.list())) == {"keep"}
    world.run(move(src, "keep", dst, "taken"))
    assert world.run(dst.get("taken")).cap == LiteralCap(b"k")
    with pytest.raises(NoSuchChild):
        world.run(move(src, "keep", dst, "x"))


def test_move_within_one_directory_is_a_rename(world: World) -> None:
    """Moving inside one directory (even through two nodes) is a single publish."""
    root = world.mkroot({"a": (LiteralCap(b"a"), meta())})
    other = world.open(root.cap)
    before = world.grid[0].count("read_test_write")
    world.run(move(root, "a", other, "b"))
    assert world.grid[0].count("read_test_write") == before + 1
    assert set(world.run(root.list())) == {"b"}


def test_move_does_not_remove_a_replaced_source(world: World) -> None:
    """If the source name was relinked meanwhile, move leaves the new entry alone."""
    src = world.mkroot({"f": (LiteralCap(b"old"), meta())})
    dst = world.mkroot()
    other_writer = World(world.grid).open(src.cap)
    raced: list[Entry] = []

    def relink_source(method: str, args: tuple[Any, ...]) -> None:
        """As the move publishes the destination, another writer relinks the source."""
        if method == "read_test_write" and args[0] == dst.storage_index and not raced:
            raced.append(run(other_writer.add("f", LiteralCap(b"new"), meta())))

    for server in world.grid:
        intercept(server, relink_source)
    world.run(move(src, "f", dst, "f"))
    assert raced
    assert world.run(src.get("f")).cap == LiteralCap(b"new")
    assert world.run(world.open(dst.cap).get("f")).cap == LiteralCap(b"old")


# --- names --------------------------------------------------------------------


def test_names_are_nfc(world: World) -> None:
    """NFD input finds and replaces the NFC entry; listings give NFC."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", nfd) == nfc != nfd
    root = world.mkroot({nfd: (LiteralCap(b"1"), meta())})
    assert list(world.run(root.list())) == [nfc]
    assert world.run(root.get(nfd)).name == nfc
    assert world.run(root.get(nfc.encode("utf-8"))).cap == LiteralCap(b"1")
    world.run(root.add(nfc, LiteralCap(b"2"), meta()))
    world.run(root.rename(nfd, "x\u0301"))
    assert list(world.run(root.list())) == ["x\u0301"]  # no precomposed form exists
    world.run(root.add("\u212b", LiteralCap(b"3"), meta()))  # ANGSTROM SIGN → Å
    assert "\u00c5" in world.run(root.list())
    assert world.run(root.remove("A\u030a")).cap == LiteralCap(b"3")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        (".", "'.' is reserved"),
        ("..", "'..' is reserved"),
        ("a/b", "contains '/'"),
        ("/", "contains '/'"),
        ("a\0b", "NUL"),
        ("x" * 256, "256 bytes long in UTF-8; at most 255"),
        ("\u00e9" * 128, "256 bytes long"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"a\xc3", "not valid UTF-8"),
        ("bad\udcff", "unpaired surrogate"),
    ],
)
def test_bad_names_are_rejected(world: World, name: str | bytes, message: str) -> None:
    """Each invalid name is refused with a message saying why, by every operation."""
    with pytest.raises(BadName, match=message):
        normalize_name(name)
    root = world.mkroot({"ok": (LiteralCap(b""), meta())})
    with pytest.raises(BadName, match=message):
        world.run(root.add(name, LiteralCap(b""), meta()))
    with pytest.raises(BadName, match=message):
        world.run(root.rename("ok", name))
    with pytest.raises(BadName, match=message):
        world.run(root.get(name))
    assert set(world.run(root.list())) == {"ok"}


def test_long_names_count_bytes_after_nfc() -> None:
    """255 bytes is allowed; the limit applies to the NFC form's UTF-8."""
    assert normalize_name("x" * 255) == "x" * 255
    decomposed = "e\u0301" * 127 + "a"  # 382 bytes as given, 255 after NFC
    assert len(normalize_name(decomposed).encode()) == 255
    long_message = str(pytest.raises(BadName, normalize_name, "y" * 300).value)
    assert len(long_message) < 150  # long names are shortened in messages


def test_same_name_twice_in_one_batch(world: World) -> None:
    """Two spellings of one name in one add_many are refused."""
    root = world.mkroot()
    with pytest.raises(BadName, match="given twice"):
        world.run(
            root.add_many(
                {
                    "caf\u00e9": (None, meta("symlink", symlink="a")),
                    "cafe\u0301": (None, meta("symlink", symlink="b")),
                }
            )
        )


# --- read-only views ------------------------------------------------------------


def test_read_only_view_hides_write_caps_and_refuses_writes(world: World) -> None:
    """Through a read cap children are read-only, write caps are absent, changes fail."""
    file_cap, dir_cap = MutableWriteCap.generate(), DirectoryWriteCap.generate()
    root = world.mkroot({"f": (file_cap, meta()), "d": (dir_cap, meta("dir"))})
    ro = world.open(root.cap.get_read_cap().to_string())
    assert ro.read_only and not root.read_only
    listed = world.run(ro.list())
    assert listed["f"].cap == file_cap.get_read_cap()
    assert isinstance(listed["f"].cap, MutableReadCap)
    assert listed["d"].cap == dir_cap.get_read_cap()
    assert world.run(ro.child("d")).read_only
    for attempt in (
        ro.add("x", LiteralCap(b""), meta()),
        ro.add_many({}),
        ro.remove("f"),
        ro.rename("f", "g"),
        ro.mkdir("m"),
        ro.set_metadata("f", mtime=1),
        move(ro, "f", root, "g"),
        move(root, "f", ro, "g"),
    ):
        with pytest.raises(NotWritable, match="opened read-only"):
            world.run(attempt)
    assert set(world.run(root.list())) == {"f", "d"}
    # The plaintext a read-cap holder decrypts holds read caps only.
    plaintext = world.plaintext(root)
    for secret in (file_cap.to_string(), dir_cap.to_string()):
        assert secret.encode() not in plaintext
        assert secret.split(":")[-1].encode() not in plaintext
    for seed in (file_cap.signing_seed, dir_cap.node.signing_seed):
        assert seed not in plaintext
    assert file_cap.get_read_cap().to_string().encode() in plaintext


def test_write_caps_are_bound_to_their_entry(world: World) -> None:
    """A sealed write cap swapped onto another entry fails to decrypt (CorruptDirectory)."""
    a, b = MutableWriteCap.generate(), MutableWriteCap.generate()
    root = world.mkroot({"a": (a, meta()), "b": (b, meta())})
    records = unpack_contents(world.plaintext(root))
    records["a"] = evolve(records["a"], sealed_write_cap=records["b"].sealed_write_cap)
    tampered = world.run(world.client.create(pack_contents(records)))
    view = world.open(DirectoryWriteCap(tampered))
    with pytest.raises(CorruptDirectory, match="failed to decrypt"):
        world.run(view.list())


def test_open_refuses_non_directory_caps(world: World) -> None:
    """Only directory write and read caps open as directories."""
    with pytest.raises(BadCapability, match="does not name a directory"):
        world.open(MutableWriteCap.generate().to_string())
    with pytest.raises(BadCapability, match="does not name a directory"):
        world.open(DirectoryWriteCap.generate().get_verify_cap())  # type: ignore[arg-type]
    with pytest.raises(BadChild, match="cannot be linked"):
        world.run(world.mkroot().add("v", MutableWriteCap.generate().get_verify_cap()))  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr(world: World) -> None:
    """Node and entry reprs show no capability strings or keys."""
    cap = MutableWriteCap.generate()
    root = world.mkroot({"f": (cap, meta())})
    entry = world.run(root.get("f"))
    for text in (repr(root), repr(entry), repr(world.run(root.list()))):
        assert cap.to_string().split(":")[-1] not in text
        assert root.cap.to_string().split(":")[-1] not in text
        assert cap.get_read_cap().to_string().split(":")[2] not in text


# --- metadata and format ----------------------------------------------------------


def test_metadata_is_validated() -> None:
    """Symlinks need targets, kinds are known, kind and cap must agree."""
    with pytest.raises(BadChild, match="symlink entry needs a target"):
        EntryMetadata(kind="symlink", mtime=0, ctime=0)
    with pytest.raises(BadChild, match="symlink entry needs a target"):
        EntryMetadata(kind="file", mtime=0, ctime=0, symlink="x")
    with pytest.raises(BadChild, match="kind is one of"):
        EntryMetadata(kind="fifo", mtime=0, ctime=0)  # type: ignore[arg-type]
    with pytest.raises(BadChild, match="mode"):
        EntryMetadata(kind="file", mtime=0, ctime=0, mode=-1)


def test_kind_must_match_cap(world: World) -> None:
    """A file cap cannot be linked as a directory, nor a symlink with a cap."""
    root = world.mkroot()
    with pytest.raises(BadChild, match="says 'dir' but the capability links a 'file'"):
        world.run(root.add("x", LiteralCap(b""), meta("dir")))
    with pytest.raises(BadChild, match="says 'symlink'"):
        world.run(root.add("x", LiteralCap(b""), meta("symlink", symlink="t")))
    with pytest.raises(BadChild, match="says 'file' but the capability links a 'symlink'"):
        world.run(root.add("x", None, meta()))


def test_format_is_versioned_cbor(world: World) -> None:
    """The plaintext is [1, {name: [read cap, sealed write cap, metadata]}]."""
    cap = MutableWriteCap.generate()
    root = world.mkroot(
        {"f": (cap, meta(mode=0o644, size=9)), "l": (None, EntryMetadata.symlink_to("t", 2))}
    )
    version, entries = cbor2.loads(world.plaintext(root))
    assert version == FORMAT_VERSION == 1
    read_cap, sealed, metadata = entries["f"]
    assert read_cap == cap.get_read_cap().to_string()
    assert isinstance(sealed, bytes) and len(sealed) > 24
    assert metadata == [0, 1000.0, 1001.0, 0o644, False, None, 9]
    assert entries["l"] == [None, None, [2, 2.0, 2.0, None, False, "t", None]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\x00garbage", "not valid CBOR"),
        (cbor2.dumps({"v": 1}), "do not start with a format version"),
        (cbor2.dumps([2, {}]), "format version 2; this gateway reads version 1"),
        (cbor2.dumps([1]), "no entry table"),
        (cbor2.dumps([1, {b"n": [None, None, []]}]), "name is not text"),
        (cbor2.dumps([1, {"n": [None, None]}]), "not a list of 3 fields"),
        (
            cbor2.dumps([1, {"n": [5, None, [0, 0, 0, None, False, None, None]]}]),
            "malformed capability",
        ),
        (
            cbor2.dumps([1, {"n": [None, None, [0, 0, 0, None, False, None, None]]}]),
            "has no capability",
        ),
        (
            cbor2.dumps([1, {"n": ["GG:LIT:", None, [9, 0, 0, None, False, None, None]]}]),
            "unknown kind",
        ),
        (
            cbor2.dumps([1, {"n": ["GG:LIT:", None, [0, "x", 0, None, False, None, None]]}]),
            "not numbers",
        ),
        (
            cbor2.dumps([1, {"n": ["GG:LIT:", None, [0, 0, 0, "rw", False, None, None]]}]),
            "wrong type",
        ),
        (cbor2.dumps([1, {"n": ["GG:LIT:", None, [0, 0]]}]), "not a list of 7"),
    ],
)
def test_corrupt_contents_are_refused(data: bytes, message: str) -> None:
    """Damaged or unknown contents raise CorruptDirectory with a clear message."""
    with pytest.raises(CorruptDirectory, match=message):
        unpack_contents(data)


def test_bad_child_cap_in_contents(world: World) -> None:
    """A stored cap that does not parse, or disagrees with its kind, is reported on listing."""
    bad = [1, {"n": ["GG:NOPE:x", None, [0, 0, 0, None, False, None, None]]}]
    node = world.open(DirectoryWriteCap(world.run(world.client.create(cbor2.dumps(bad)))))
    with pytest.raises(CorruptDirectory, match="bad capability"):
        world.run(node.list())
    dircap = DirectoryWriteCap.generate().get_read_cap().to_string()
    wrong = [1, {"n": [dircap, None, [0, 0, 0, None, False, None, None]]}]
    node = world.open(DirectoryWriteCap(world.run(world.client.create(cbor2.dumps(wrong)))))
    with pytest.raises(CorruptDirectory, match="do not agree"):
        world.run(node.list())


def test_non_directory_object_is_refused(world: World) -> None:
    """A mutable file opened as a directory fails with CorruptDirectory, not a crash."""
    cap = world.run(world.client.create(b"just a file"))
    with pytest.raises(CorruptDirectory):
        world.run(world.open(DirectoryWriteCap(cap)).list())


# --- caching ------------------------------------------------------------------------


def test_list_cache_honours_max_age(world: World) -> None:
    """list(max_age) reuses the last contents until they are older than max_age."""
    root = world.mkroot({"a": (LiteralCap(b"a"), meta())})
    other = World(world.grid).open(root.cap)
    world.run(other.add("b", LiteralCap(b"b"), meta()))
    reads = world.grid[0].count("list_mutable")
    assert set(world.run(root.list(max_age=10))) == {"a"}  # cached since create
    assert world.grid[0].count("list_mutable") == reads
    world.clock.advance(11)
    assert set(world.run(root.list(max_age=10))) == {"a", "b"}
    assert world.grid[0].count("list_mutable") == reads + 1
    world.run(other.remove("a"))
    assert set(world.run(root.list(max_age=10))) == {"a", "b"}
    assert set(world.run(root.list())) == {"b"}  # no max_age: always read
    assert world.run(root.get("b", max_age=60)).cap == LiteralCap(b"b")


def test_mutations_always_reread(world: World) -> None:
    """A change applies to the grid's contents, not to a stale cache."""
    root = world.mkroot()
    other = World(world.grid).open(root.cap)
    world.run(other.add("theirs", LiteralCap(b"t"), meta()))
    world.run(root.add("mine", LiteralCap(b"m"), meta()))
    assert set(world.run(root.list(max_age=1000))) == {"theirs", "mine"}


# --- concurrency --------------------------------------------------------------------


def both(*coroutines: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """Run coroutines concurrently; fail with the first failure."""

    async def go() -> None:
        await DeferredList(
            [Deferred.fromCoroutine(c) for c in coroutines],
            fireOnOneErrback=True,
            consumeErrors=True,
        )

    return go()


def test_two_writers_lose_no_entries() -> None:
    """Two processes adding 200 entries each to one directory at once end with all 400.

    Every request takes simulated time, so the writers' read-modify-write cycles
    overlap and many publishes lose the race; each loser re-reads and re-applies.
    """
    clock = Clock()
    grid = make_grid(4, clock=clock, latency=0.01)
    first = World(grid, clock)
    root = first.mkroot()
    second = MutableClient(grid, GatewaySecrets(b"C" * 32, b"L" * 32), PARAMS)
    writers = [
        DirectoryNode.open(first.client, root.cap, clock=clock, rng=random.Random(1)),
        DirectoryNode.open(second, root.cap.to_string(), clock=clock, rng=random.Random(2)),
    ]

    async def add_all(node: DirectoryNode, prefix: str) -> None:
        for i in range(200):
            await node.add(f"{prefix}-{i}", LiteralCap(b"%s%d" % (prefix.encode(), i)))

    first.run(both(add_all(writers[0], "one"), add_all(writers[1], "two")))
    listed = first.run(first.open(root.cap).list())
    assert len(listed) == 400
    assert listed["two-199"].cap == LiteralCap(b"two199")
    publishes = grid[0].count("read_test_write")
    assert publishes > 401, "the writers never collided; the test proves nothing"
    assert not any(g.server.corruption_reports for g in grid), "false corruption advisories"


def test_concurrent_rename_and_add() -> None:
    """A rename racing additions keeps both the renamed entry and every addition."""
    clock = Clock()
    grid = make_grid(4, clock=clock, latency=0.01)
    w = World(grid, clock)
    root = w.mkroot({f"old{i}": (LiteralCap(b"%d" % i), meta()) for i in range(20)})
    a = DirectoryNode.open(w.client, root.cap, clock=clock, rng=random.Random(3))
    b = DirectoryNode.open(
        MutableClient(grid, SECRETS, PARAMS), root.cap, clock=clock, rng=random.Random(4)
    )

    async def renames() -> None:
        for i in range(20):
            await a.rename(f"old{i}", f"new{i}", overwrite=False)

    async def adds() -> None:
        for i in range(20):
            await b.add(f"added{i}", None, EntryMetadata.symlink_to(str(i), 0))

    w.run(both(renames(), adds()))
    listed = w.run(w.open(root.cap).list())
    assert set(listed) == {f"new{i}" for i in range(20)} | {f"added{i}" for i in range(20)}
    assert listed["new7"].cap == LiteralCap(b"7")
    assert grid[0].count("read_test_write") > 41, "the writers never collided"


# --- a model check ------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "caf\u00e9", "cafe\u0301", "\u212b", "\u00c5", "z"])
OPERATIONS = st.one_of(
    st.tuples(st.just("add"), NAMES, st.integers(0, 3), st.booleans()),
    st.tuples(
        st.just("add_many"), st.lists(NAMES, max_size=3, unique_by=normalize_name), st.booleans()
    ),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("rename"), NAMES, NAMES, st.booleans()),
    st.tuples(st.just("touch"), NAMES, st.floats(0, 2e9)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=12))
def test_operations_match_a_dict_model(operations: list[tuple[Any, ...]]) -> None:
    """Random sequences of operations leave the directory equal to a dict that did the same."""
    world = World(make_grid(3))
    root = world.mkroot()
    model: dict[str, tuple[ChildCap | None, EntryMetadata]] = {}

    def expect(error: type[Exception] | None, action: Coroutine[Any, Any, Any]) -> None:
        if error is None:
            world.run(action)
        else:
            with pytest.raises(error):
                world.run(action)

    for op in operations:
        if op[0] == "add":
            _, raw, value, overwrite = op
            name = normalize_name(raw)
            child: tuple[ChildCap | None, EntryMetadata] = (
                LiteralCap(b"%d" % value),
                meta(t=value),
            )
            fails = not overwrite and name in model
            expect(ChildExists if fails else None, root.add(raw, *child, overwrite=overwrite))
            if not fails:
                model[name] = child
        elif op[0] == "add_many":
            _, raws, overwrite = op
            batch = {r: (None, EntryMetadata.symlink_to(r, 3)) for r in raws}
            fails = not overwrite and any(normalize_name(r) in model for r in raws)
            expect(ChildExists if fails else None, root.add_many(batch, overwrite))
            if not fails:
                model.update({normalize_name(r): c for r, c in batch.items()})
        elif op[0] == "remove":
            name = normalize_name(op[1])
            expect(None if name in model else NoSuchChild, root.remove(op[1]))
            model.pop(name, None)
        elif op[0] == "rename":
            _, old_raw, new_raw, overwrite = op
            old, new = normalize_name(old_raw), normalize_name(new_raw)
            if old not in model:
                expect(NoSuchChild, root.rename(old_raw, new_raw, overwrite))
            elif old != new and not overwrite and new in model:
                expect(ChildExists, root.rename(old_raw, new_raw, overwrite))
            else:
                world.run(root.rename(old_raw, new_raw, overwrite))
                model[new] = model.pop(old)
        else:
            _, raw, when = op
            name = normalize_name(raw)
            expect(None if name in model else NoSuchChild, root.set_metadata(raw, mtime=when))
            if name in model:
                cap, old_meta = model[name]
                model[name] = (cap, evolve(old_meta, mtime=when))
    fresh = World(world.grid).open(root.cap)
    assert {n: (e.cap, e.metadata) for n, e in world.run(fresh.list()).items()} == model


def test_changes_in_a_row_skip_reads_until_another_writer_appears(world: World) -> None:
    """One node's consecutive changes publish without reading; another writer's change is kept.

    After a collision with another writer the node reads before each change again.
    """
    root = world.mkroot()

    def reads() -> int:
        return sum(g.count("read_mutable") + g.count("list_mutable") for g in world.grid)

    before = reads()
    world.run(root.mkdir("a", meta("dir")))
    world.run(root.rename("a", "b"))
    world.run(root.remove("b"))
    assert reads() == before, "changes right after this node's own publishes read the grid"
    other = DirectoryNode.open(
        MutableClient(world.grid, SECRETS, PARAMS), root.cap, clock=world.clock
    )
    world.run(other.add("theirs", LiteralCap(b"t")))
    world.run(root.add("mine", LiteralCap(b"m")))
    world.run(root.add("mine too", LiteralCap(b"m2")))
    assert set(world.run(world.open(root.cap).list())) == {"theirs", "mine", "mine too"}
    assert reads() > before


def test_concurrent_changes_through_one_node_take_turns() -> None:
    """Changes through one node never collide with each other: one publish each, no re-read."""
    clock = Clock()
    world = World(make_grid(4, clock=clock, latency=0.01), clock)
    root = world.mkroot()
    before = {m: world.grid[0].count(m) for m in ("read_test_write", "read_mutable")}

    async def together() -> None:
        await DeferredList(
            [Deferred.fromCoroutine(root.add(f"f{i}", LiteralCap(b"%d" % i))) for i in range(10)]
        )

    world.run(together())
    assert len(world.run(world.open(root.cap).list())) == 10
    assert world.grid[0].count("read_test_write") - before["read_test_write"] == 10


def test_names_checked_again_give_the_same_answer() -> None:
    """Names are remembered once found valid: asked again (every lookup of a path asks),
    a name gets the same NFC form, an invalid one is refused every time, and the memory
    stays bounded without changing any answer."""
    from gateway.objects import dirformat

    dirformat._normalized_text.cache_clear()
    decomposed = "cafe\u0301"
    assert normalize_name(decomposed) == normalize_name(decomposed) == "caf\u00e9"
    for _ in range(2):
        with pytest.raises(BadName, match="contains '/'"):
            normalize_name("a/b")
    assert dirformat._normalized_text.cache_info().currsize == 1  # "a/b" is not kept
    for i in range(dirformat.NORMALIZED_KEPT + 10):
        assert normalize_name(f"n{i}") == f"n{i}"
    assert dirformat._normalized_text.cache_info().currsize <= dirformat.NORMALIZED_KEPT
    assert normalize_name(decomposed) == "caf\u00e9"
    assert normalize_name(decomposed.encode()) == "caf\u00e9"  # bytes: decoded, then checked


def test_a_listing_again_makes_only_the_changed_entries(world: World) -> None:
    """Listing an unchanged directory again (its contents as last read) hands out the same
    Entry objects (a large listing costs only its changes), and ``get`` of a listed name
    the listed one; after changes the entries show them."""
    root = world.mkroot(every_kind_of_child())
    first = world.run(root.list(max_age=60))
    again = world.run(root.list(max_age=60))
    assert again == first and all(again[name] is first[name] for name in first)
    assert world.run(root.get("mutable", max_age=60)) is first["mutable"]
    world.run(root.set_metadata("literal", mode=0o600))
    world.run(root.rename("immutable", "moved"))
    world.run(root.add("new", LiteralCap(b"n"), meta(size=1)))
    second = world.run(root.list())
    assert set(second) == set(first) - {"immutable"} | {"moved", "new"}
    assert second["literal"].metadata.mode == 0o600 and first["literal"].metadata.mode is None
    assert second["moved"].name == "moved" and second["moved"].cap == first["immutable"].cap
    fresh = world.run(World(world.grid).open(root.cap).list())
    assert {n: (e.cap, e.metadata) for n, e in fresh.items()} == {
        n: (e.cap, e.metadata) for n, e in second.items()
    }


def test_lookups_again_make_no_new_entries(world: World) -> None:
    """``get`` of a name looked up before hands out the same Entry while its record is
    unchanged (a path's lookup, per component, at every STAT), a changed one shows the
    change, and a later listing hands out the entries looked up."""
    root = world.mkroot(every_kind_of_child())
    first = world.run(root.get("literal", max_age=60))
    assert world.run(root.get("literal", max_age=60)) is first
    world.run(root.set_metadata("literal", mode=0o600))
    changed = world.run(root.get("literal", max_age=60))
    assert changed is not first and changed.metadata.mode == 0o600
    assert world.run(root.get("literal", max_age=60)) is changed
    assert world.run(root.list(max_age=60))["literal"] is changed
    with pytest.raises(NoSuchChild):
        world.run(root.get("missing", max_age=60))
