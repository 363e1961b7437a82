"""The ``[audit]`` keys of node.cfg: defaults, validation, and which nodes have them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config, render_config


def _gateway(**audit: str) -> str:
    return render_config("gateway", {("audit", key): value for key, value in audit.items()})


def test_defaults() -> None:
    """Off by default; when on, logs/audit.jsonl rotated past 100 MiB, 10 old files kept."""
    config = parse_config(render_config("gateway", {}), "node.cfg")
    assert config.get("audit", "enabled") is False
    assert config.get("audit", "path") == "logs/audit.jsonl"
    assert config.get("audit", "max_size") == 100 * 1024**2
    assert config.get("audit", "keep") == 10


def test_rendered_config_shows_the_audit_keys() -> None:
    """A new gateway's node.cfg lists the [audit] keys, commented out at their defaults."""
    text = render_config("gateway", {})
    assert "[audit]\n" in text and "#enabled = false\n" in text and "#keep = 10\n" in text


def test_values_are_parsed() -> None:
    """Sizes take units; keep may be 0; a path may be absolute."""
    config = parse_config(
        _gateway(enabled="yes", path="/var/log/gw/audit.jsonl", max_size="1MiB", keep="0"), "c"
    )
    assert config.get("audit", "enabled") is True
    assert config.get("audit", "path") == "/var/log/gw/audit.jsonl"
    assert (config.get("audit", "max_size"), config.get("audit", "keep")) == (1024**2, 0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("enabled", "sometimes", "expected true or false"),
        ("keep", "-1", "must be between 0 and 1000"),
        ("keep", "many", "expected a whole number"),
        ("path", "logs/", "expected a file path"),
        ("max_size", "big", "expected a size"),
    ],
)
def test_bad_values_are_refused_by_name(key: str, value: str, message: str) -> None:
    """A bad value stops the start with the file, section and key named."""
    with pytest.raises(ConfigError) as e:
        parse_config(_gateway(**{key: value}), "/n/node.cfg")
    assert str(e.value).startswith(f"/n/node.cfg: [audit] {key}: {message}")


def test_storage_nodes_have_no_audit_log() -> None:
    """A storage node serves no accounts: [audit] keys are refused there."""
    text = render_config("storage", {("storage", "location"): "127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"\[audit\] enabled: not used by a storage node"):
        parse_config(text + "\n[audit]\nenabled = true\n", "node.cfg")
