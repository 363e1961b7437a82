"""Describing our storage servers to a Tahoe-LAFS client in its ``private/servers.yaml``.

Tahoe 1.20 talks HTTP to a static server only when its announcement carries
``anonymous-storage-NURLs`` (and ``[client] force_foolscap`` is off). It still
parses ``anonymous-storage-FURL`` for a Foolscap tub id, from which it derives
lease-renewal and write-enabler secrets, so that FURL must be well-formed and
stable for the life of the server; we derive it, like the server id (and with
it the permutation seed), from the server's pinned TLS key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from storage import wire


def _b32(data: bytes) -> str:
    return base64.b32encode(data).rstrip(b"=").decode("ascii").lower()


def static_server(nurl: str, nickname: str) -> tuple[str, dict[str, Any]]:
    """The ``(server_id, entry)`` for one of our servers in Tahoe's ``servers.yaml``.

    * server id ``v0-<52 base32>``: base32 of the 32-byte SPKI digest; Tahoe uses
      it as the permutation seed (where shares go) and to name the server;
    * ``anonymous-storage-FURL``: never dialled over HTTP, but its tub id
      (base32 of the digest's first 20 bytes) seeds lease and write-enabler secrets;
    * ``anonymous-storage-NURLs``: the server's NURL, which makes Tahoe use HTTPS.
    """
    digest = wire.parse_nurl(nurl).spki_digest
    server_id = "v0-" + _b32(digest)
    tubid = _b32(digest[:20])
    parsed = wire.parse_nurl(nurl)
    furl = f"pb://{tubid}@tcp:{parsed.host}:{parsed.port}/storage"
    ann = {
        "nickname": nickname,
        "anonymous-storage-FURL": furl,
        "anonymous-storage-NURLs": [nurl],
        "permutation-seed-base32": _b32(digest),
    }
    return server_id, {"ann": ann}


def write_servers_yaml(node_dir: Path, nurls: dict[str, str]) -> Path:
    """Write ``private/servers.yaml`` (JSON is valid YAML) listing ``{nickname: nurl}``."""
    storage = dict(static_server(nurl, nickname) for nickname, nurl in nurls.items())
    path = node_dir / "private" / "servers.yaml"
    path.write_text(json.dumps({"storage": storage}, indent=2) + "\n")
    path.chmod(0o600)
    return path
