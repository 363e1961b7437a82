"""A directory's contents as packed from each entry's kept encoding: the same bytes as
CBOR of the whole, whatever the entries, their number, or the names they were packed under."""

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
