"""A directory's contents as packed from each entry's kept encoding, or from the table
packed before: the same bytes as CBOR of the whole, whatever the entries, their number,
the names they were packed under, or how the table changed."""

from __future__ import annotations

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from gateway.objects.dirformat import (
    FORMAT_VERSION,
    EntryMetadata,
    Record,
    pack_contents,
    unpack_contents,
)
from gateway.objects.dirpacking import Packer


def whole(records: dict[str, Record]) -> bytes:
    """The contents as CBOR of the whole table (the format's definition)."""
    entries = {
        name: [r.read_cap, r.sealed_write_cap, r.metadata.to_cbor()] for name, r in records.items()
    }
    return bytes(cbor2.dumps([FORMAT_VERSION, entries]))


def file_record(size: int = 5, mtime: float = 1000.5) -> Record:
    """A file entry with a literal cap."""
    metadata = EntryMetadata(kind="file", mtime=mtime, ctime=mtime, mode=0o644, size=size)
    return Record("GG:LIT:aGVsbG8", None, metadata)


metadata = st.builds(
    EntryMetadata,
    kind=st.sampled_from(["file", "dir"]),
    mtime=st.floats(min_value=0, max_value=2**40, allow_nan=False),
    ctime=st.floats(min_value=0, max_value=2**40, allow_nan=False),
    mode=st.none() | st.integers(min_value=0, max_value=0o7777),
    no_write=st.booleans(),
    size=st.none() | st.integers(min_value=0, max_value=2**63),
)
records = st.builds(
    Record,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567:", min_size=1, max_size=120),
    st.none() | st.binary(min_size=25, max_size=200),
    metadata,
)


@given(st.dictionaries(st.text(min_size=1, max_size=40), records, max_size=40))
def test_packed_contents_are_cbor_of_the_whole_and_read_back(
    table: dict[str, Record],
) -> None:
    """Any table packs to the bytes CBOR of the whole gives, twice over (the second time
    from the kept encodings), and reads back as the same records."""
    assert pack_contents(table) == whole(table)
    assert pack_contents(table) == whole(table)
    assert unpack_contents(pack_contents(table)) == table


def test_the_map_head_takes_every_width() -> None:
    """Tables just under and over each width of CBOR's count pack as CBOR of the whole."""
    record = file_record()
    for count in (0, 1, 23, 24, 255, 256, 65535, 65536):
        table = {f"f{i:06d}": record for i in range(count)}
        packed = pack_contents(table)
        assert packed == whole(table), count
        assert len(cbor2.loads(packed)[1]) == count


def test_a_renamed_or_replaced_entry_packs_as_it_now_is() -> None:
    """A record packed under one name and then moved to another is packed under the new
    name; an entry replaced by a changed record shows the change; the kept encoding
    plays no part in a record's equality."""
    record = file_record()
    before = {"a.txt": record, "b.txt": file_record(size=9)}
    pack_contents(before)
    renamed = {"c.txt": record, "b.txt": before["b.txt"]}
    assert pack_contents(renamed) == whole(renamed)
    assert set(unpack_contents(pack_contents(renamed))) == {"b.txt", "c.txt"}
    changed = dict(renamed, **{"c.txt": file_record(size=77, mtime=2000.25)})
    read = unpack_contents(pack_contents(changed))
    assert read["c.txt"].metadata.size == 77
    assert read["c.txt"].metadata.mtime == 2000.25
    assert record == file_record() and hash(record) == hash(file_record())


names = st.text(min_size=1, max_size=12)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), names, records),  # a new entry, or a changed one
        st.tuples(st.just("touch"), st.integers(min_value=0), records),  # change an entry
        st.tuples(st.just("remove"), st.integers(min_value=0), st.none()),
        st.tuples(st.just("same"), st.none(), st.none()),  # publish the same table again
    ),
    max_size=30,
)


@given(st.dictionaries(names, records, max_size=30), steps)
def test_a_packer_packs_each_table_as_cbor_of_the_whole(
    first: dict[str, Record], changes: list[tuple[str, object, object]]
) -> None:
    """Tables made from one another by new, changed and removed entries, packed one after
    another by one Packer (each from the one before where it can be), are each the bytes
    CBOR of the whole gives, and read back as that table."""
    packer = Packer()
    table = dict(first)
    for op, where, record in [("same", None, None), *changes]:
        table = dict(table)  # each publish packs a new table made from the last
        if op == "set":
            assert isinstance(where, str) and isinstance(record, Record)
            table[where] = record
        elif op == "touch" and table:
            assert isinstance(where, int) and isinstance(record, Record)
            table[list(table)[where % len(table)]] = record
        elif op == "remove" and table:
            assert isinstance(where, int)
            del table[list(table)[where % len(table)]]
        packed = packer.pack(table)
        assert packed == whole(table)
        assert unpack_contents(packed) == table


def test_a_packer_copies_what_did_not_change() -> None:
    """Changing one entry of 2,000, or adding one at the end, packs from the table before
    (the bytes as CBOR of the whole); removing one packs the whole table."""
    packer = Packer()
    table = {f"neighbour-{n:05d}.txt": file_record(size=n) for n in range(2000)}
    assert packer.pack(table) == whole(table)
    assert packer.spliced == 0
    table = dict(table, **{"neighbour-01000.txt": file_record(size=123456789)})
    assert packer.pack(table) == whole(table)
    table = dict(table, **{"new.txt": file_record()})
    assert packer.pack(table) == whole(table)
    assert packer.spliced == 2
    del table["neighbour-00000.txt"]
    assert packer.pack(table) == whole(table)
    assert packer.spliced == 2
    assert len(unpack_contents(packer.pack(table))) == 2000
