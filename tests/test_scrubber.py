"""The scrubber that keeps secrets out of logs and web pages: capabilities (overlaid ones
whole), swissnums and registered secrets are redacted, also when a text was scrubbed before
the secret was registered; what it keeps of texts it saw stays bounded."""

from __future__ import annotations

from gateway import logfile
from gateway.logfile import Scrubber
from gateway.web.data import scrubbed


def test_an_overlaid_cap_is_redacted_whole() -> None:
    """A PTREE cap ends with base64url of file bytes (``-`` and ``_`` among them): none of
    it is left beside the redaction."""
    cap = "GG:PTREE:aaaaaaaabbbbbbbb:cccccccc:4096:-_AbCd-_EfGh_-IjKl"
    text = Scrubber().scrub(f"uploaded {cap} done")
    assert text == "uploaded [redacted-cap] done"


def test_a_secret_added_later_is_redacted_in_a_text_seen_before() -> None:
    """A text scrubbed (and kept) before a secret was registered is scrubbed again after."""
    scrubber = Scrubber()
    line = "password is hunter2-password"
    assert scrubber.scrub(line) == line
    scrubber.add("hunter2-password")
    assert scrubber.scrub(line) == "password is [redacted]"
    assert scrubber.scrub(line) == "password is [redacted]"  # and from what it kept


def test_a_page_rendered_again_gives_the_same_scrubbed_data() -> None:
    """A status page's data scrubbed twice gives equal results, keys included; swissnums and
    caps in values and keys are redacted both times."""
    scrubber = Scrubber()
    scrubber.add("s3cret-account-key")
    page = {
        "jobs": [{"file": f"/tree/f{i}.py", "last_error": None} for i in range(50)],
        "pb://tubid@127.0.0.1:1/swissnum": "s3cret-account-key",
        "cap": "GG:DIR:abcdefghijklmnop:qrstuvwxyz234567",
    }
    first, second = scrubbed(page, scrubber), scrubbed(page, scrubber)
    assert first == second
    assert first["pb://tubid@127.0.0.1:1/[redacted]"] == "[redacted]"
    assert first["cap"] == "[redacted-cap]"
    assert first["jobs"][7] == {"file": "/tree/f7.py", "last_error": None}


def test_what_it_keeps_is_bounded() -> None:
    """Past KEEP_TEXTS short texts, what it kept is dropped; long texts are never kept; every
    answer is still scrubbed."""
    scrubber = Scrubber()
    for i in range(logfile.KEEP_TEXTS + 10):
        assert scrubber.scrub(f"line {i} GG:DIR:abcdefghijklmnop") == f"line {i} [redacted-cap]"
    assert len(scrubber._kept) <= logfile.KEEP_TEXTS
    long_text = "x" * (logfile.KEEP_LENGTH + 1)
    assert scrubber.scrub(long_text) == long_text
    assert long_text not in scrubber._kept
