"""The configuration schema: parsing, validation messages and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import (
    SCHEMA,
    ConfigError,
    options_for,
    parse_config,
    parse_duration,
    parse_size,
    render_config,
)


def test_every_option_has_a_doc_and_a_parsable_default() -> None:
    """Every key is documented and its default parses (except required keys)."""
    for option in SCHEMA:
        assert option.doc, option.key
        if option.default is not None:
            option.parse(option.default)


def test_rendered_defaults_parse_to_the_defaults() -> None:
    """A freshly rendered gateway config parses, with every default in force."""
    config = parse_config(render_config("gateway", {}), "node.cfg")
    assert config.kind == "gateway"
    assert config.get("sftp", "port") == 8022
    assert config.get("grid", "embedded") is True
    assert config.get("uploads", "staging_quota") == 10 * 1024**3
    assert config.get("uploads", "grace_period") == 30.0


def test_storage_config_needs_a_location() -> None:
    """A storage node without a location is refused, naming the key."""
    with pytest.raises(ConfigError) as e:
        parse_config(render_config("storage", {}), "/n/node.cfg")
    assert str(e.value) == "/n/node.cfg: [storage] location: required, but missing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("500M", 500_000_000),
        ("10GiB", 10 * 1024**3),
        ("1.5k", 1500),
        ("2 TiB", 2 * 1024**4),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    """Sizes accept decimal and binary units."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-1G"])
def test_bad_sizes(text: str) -> None:
    """A size that is not one says what it expected."""
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(text)


def test_durations() -> None:
    """Durations accept s, m, h, d and bare seconds."""
    assert [parse_duration(t) for t in ("30", "30s", "5m", "1h", "1d")] == [
        30.0,
        30.0,
        300.0,
        3600.0,
        86400.0,
    ]


_gateway_settings = st.fixed_dictionaries(
    {
        ("sftp", "port"): st.integers(0, 65535).map(str),
        ("web", "port"): st.integers(0, 65535).map(str),
        ("web", "enabled"): st.sampled_from(["true", "false", "yes", "off"]),
        ("node", "nickname"): st.text(
            st.characters(codec="utf-8", categories=("L", "N")), max_size=20
        ),
        ("node", "log_level"): st.sampled_from(["debug", "info", "warn", "error"]),
        ("uploads", "close"): st.sampled_from(["local", "grid"]),
        ("uploads", "staging_quota"): st.integers(0, 10**12).map(str),
    }
)


@given(_gateway_settings, st.integers(1, 256), st.integers(0, 255), st.integers(0, 255))
def test_config_round_trip(
    settings: dict[tuple[str, str], str], needed: int, extra_happy: int, extra_total: int
) -> None:
    """Whatever valid settings are written, parsing gives them back."""
    happy = min(needed + extra_happy, 256)
    total = min(happy + extra_total, 256)
    settings = {
        **settings,
        ("grid", "shares.needed"): str(needed),
        ("grid", "shares.happy"): str(happy),
        ("grid", "shares.total"): str(total),
    }
    config = parse_config(render_config("gateway", settings), Path("node.cfg"))
    for (section, key), raw in settings.items():
        option = next(o for o in options_for("gateway") if (o.section, o.key) == (section, key))
        assert config.get(section, key) == option.parse(raw)


@given(st.integers(1, 256), st.integers(1, 256), st.integers(1, 256))
def test_impossible_encodings_are_refused(needed: int, happy: int, total: int) -> None:
    """Any needed > happy or happy > total is refused, naming the offending key."""
    text = render_config(
        "gateway",
        {
            ("grid", "shares.needed"): str(needed),
            ("grid", "shares.happy"): str(happy),
            ("grid", "shares.total"): str(total),
        },
    )
    if needed <= happy <= total:
        assert parse_config(text, "c").get("grid", "shares.happy") == happy
    else:
        with pytest.raises(ConfigError) as e:
            parse_config(text, "c")
        assert e.value.section == "grid"
        assert e.value.key == ("shares.happy" if happy > total else "shares.needed")


def test_every_key_is_documented() -> None:
    """docs/configuration.rst documents every key of the schema, with its default."""
    text = (Path(__file__).parents[2] / "docs" / "configuration.rst").read_text()
    for option in SCHEMA:
        assert f"``{option.key}`` (default" in text, option.key
        assert f"``[{option.section}]``" in text, option.section
