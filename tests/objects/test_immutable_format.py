"""The immutable share format, without any servers: encode, decode, verify, locate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.errors import CorruptShare

KEY = b"K" * 32
SEG = 64


def params(k: int = 3, n: int = 10, segment_size: int = SEG) -> fmt.EncodingParams:
    """Encoding parameters with the small test segment size."""
    return fmt.EncodingParams(k=k, happy=min(n, 7), n=n, segment_size=segment_size)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(min_size=1, max_size=SEG * 5 + 3),
    st.integers(1, 6).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 12))),
    st.data(),
)
def test_round_trip_from_any_k_shares(data: bytes, kn: tuple[int, int], d: st.DataObject) -> None:
    """Any k shares rebuild the exact bytes, whatever k, n and size."""
    k, n = kn
    cap, shares = fmt.encode_bytes(data, KEY, params(k, n))
    assert (cap.k, cap.n, cap.size) == (k, n, len(data))
    chosen = d.draw(st.sets(st.integers(0, n - 1), min_size=k, max_size=k))
    assert fmt.decode_bytes(cap, {j: shares[j] for j in chosen}) == data


@pytest.mark.parametrize("size", [1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 7])
def test_boundary_sizes(size: int) -> None:
    """Sizes around segment boundaries give the right segment count and share size."""
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    cap, shares = fmt.encode_bytes(data, KEY, params())
    layout = fmt.ShareLayout(size, SEG, 3, 10)
    assert layout.num_segments == -(-size // SEG)
    assert {len(s) for s in shares} == {layout.share_size}
    assert fmt.decode_bytes(cap, dict(enumerate(shares[3:6], 3))) == data


def test_convergent_and_deterministic() -> None:
    """The same key, data and parameters give identical caps and shares."""
    a = fmt.encode_bytes(b"x" * 500, KEY, params())
    b = fmt.encode_bytes(b"x" * 500, KEY, params())
    assert a == b


def test_header_and_ueb_are_checked() -> None:
    """A share is rejected when its UEB, chain or block root does not match the cap."""
    cap, shares = fmt.encode_bytes(b"y" * 300, KEY, params())
    prefix = shares[4][: fmt.prefix_length(10)]
    verified = fmt.verify_prefix(cap, 4, prefix)
    assert verified.layout == fmt.ShareLayout(300, SEG, 3, 10)
    with pytest.raises(CorruptShare, match="share 5 has a header"):
        fmt.verify_prefix(cap, 5, prefix)
    for position in range(fmt.HEADER_SIZE, len(prefix)):
        bad = bytearray(prefix)
        bad[position] ^= 0x40
        with pytest.raises(CorruptShare):
            fmt.verify_prefix(cap, 4, bytes(bad))
    other = ImmutableReadCap(cap.key, b"\0" * 32, 3, 10, 300)
    with pytest.raises(CorruptShare, match="URI extension block"):
        fmt.verify_prefix(other, 4, prefix)


def test_every_flipped_byte_is_detected_or_harmless() -> None:
    """Flipping any byte of one share never changes the decoded data."""
    data = bytes(range(200))
    cap, shares = fmt.encode_bytes(data, KEY, params(k=2, n=3))
    for position in range(0, len(shares[0]), 7):
        bad = bytearray(shares[0])
        bad[position] ^= 1
        assert fmt.decode_bytes(cap, {0: bytes(bad), 1: shares[1], 2: shares[2]}) == data


def test_block_verification_names_the_share() -> None:
    """A corrupt block is reported with its share and segment number."""
    cap, shares = fmt.encode_bytes(b"z" * 300, KEY, params())
    layout = fmt.ShareLayout(300, SEG, 3, 10)
    share = shares[2]
    vs = fmt.verify_prefix(cap, 2, share[: fmt.prefix_length(10)])
    nodes = {
        i: share[layout.tree_offset + 32 * i : layout.tree_offset + 32 * (i + 1)]
        for i in fmt.block_tree_nodes_needed(layout, 3)
    }
    off = layout.block_offset(3)
    block = share[off : off + layout.block_length(3)]
    good = fmt.verify_block(vs, 3, block, nodes)
    assert good[0] == vs.block_root
    with pytest.raises(CorruptShare, match="share 2 has a corrupt block 3"):
        fmt.verify_block(vs, 3, bytes([block[0] ^ 1]) + block[1:], nodes)


def test_segments_for_ranges() -> None:
    """Range reads map to just the segments that hold them."""
    layout = fmt.ShareLayout(10 * SEG + 5, SEG, 3, 10)
    assert layout.segments_for(0, 1) == range(0, 1)
    assert layout.segments_for(SEG - 1, 2) == range(0, 2)
    assert layout.segments_for(SEG, SEG) == range(1, 2)
    assert layout.segments_for(10 * SEG, 1000) == range(10, 11)
    assert layout.segments_for(10 * SEG + 5, 10) == range(0)


def test_params_validation() -> None:
    """Impossible encoding parameters are refused at construction."""
    with pytest.raises(ValueError, match="k <= n"):
        fmt.EncodingParams(k=4, happy=2, n=3)
    with pytest.raises(ValueError, match="happy"):
        fmt.EncodingParams(k=1, happy=4, n=3)
    assert fmt.literal_or_none(b"a" * fmt.LITERAL_THRESHOLD) is not None
    assert fmt.literal_or_none(b"a" * (fmt.LITERAL_THRESHOLD + 1)) is None
