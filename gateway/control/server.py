"""The control endpoint's HTTP adapter: routes, streaming, and errors mapped in one place.

A thin twisted.web layer over :class:`~gateway.control.operations.FileOperations`
(see :mod:`gateway.control.protocol` for the wire format). Request bodies are
spooled by twisted.web into an anonymous file in the gateway's staging folder
(never into memory, never readable by others), and ``get`` streams the file
range by range, pausing whenever the client reads slower than the grid serves.
The site keeps no access log.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from gateway.accounts import AccountError
from gateway.control.operations import COPY_CHUNK, FileOperations
from gateway.control.protocol import API_PREFIX, ARGS_HEADER, ERROR_STATUS
from gateway.control.targets import BadTarget
from gateway.fs import errors as fs_errors
from gateway.grid.interfaces import ServerUnavailable
from gateway.objects import dirnode
from gateway.objects import errors as object_errors

SMALL_BODY = 64 * 1024
"""Request bodies up to this size stay in memory; larger ones are spooled to staging."""

PROGRESS_INTERVAL = 0.25
"""Least seconds between two progress lines of a check."""

_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (
        (
            BadTarget,
            object_errors.BadCapability,
            dirnode.BadName,
            fs_errors.InvalidName,
            AccountError,
        ),
        "bad-request",
    ),
    ((fs_errors.NoSuchFile, dirnode.NoSuchChild), "not-found"),
    ((fs_errors.FileExists, dirnode.ChildExists), "exists"),
    (
        (fs_errors.IsADirectory, fs_errors.NotADirectory, fs_errors.DirectoryNotEmpty),
        "conflict",
    ),
    ((fs_errors.PermissionDenied, object_errors.NotWritable), "permission"),
    (fs_errors.NoSpace, "no-space"),
    (
        (
            fs_errors.GridUnavailable,
            ServerUnavailable,
            object_errors.NotEnoughShares,
            object_errors.UploadUnhappy,
        ),
        "grid",
    ),
    ((fs_errors.FSError, object_errors.ObjectError), "error"),
)


def error_kind(error: BaseException) -> tuple[str, str] | None:
    """The wire kind and message of an expected error; None for a bug."""
    for types, kind in _KINDS:
        if isinstance(error, types):
            return kind, str(error) or type(error).__name__
    return None


@implementer(IPushProducer)
class _Pacer:
    """Lets a streaming loop wait while the transport asks it to pause."""

    def __init__(self) -> None:
        self._resumed: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        """The client's buffer is full."""
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        """The client reads again."""
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        """Return once writing may go on."""
        if self._resumed is not None:
            await self._resumed


def _json_args(raw: bytes | None) -> dict[str, Any]:
    try:
        args = json.loads(raw or b"{}")
    except ValueError:
        raise BadTarget("the request's arguments are not JSON") from None
    if not isinstance(args, dict):
        raise BadTarget("the request's arguments are not a JSON object")
    return args


def _optional_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise BadTarget(f"argument {key!r} must be text")
    return value


def _str(args: dict[str, Any], key: str) -> str:
    value = _optional_str(args, key)
    if value is None:
        raise BadTarget(f"argument {key!r} is missing")
    return value


def _send_json(request: Request, body: dict[str, Any], status: int = 200) -> None:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.write(json.dumps(body).encode() + b"\n")
    request.finish()


Handler = Callable[[Request, dict[str, Any]], Awaitable[None]]


class ControlResource(Resource):
    """``POST /v1/<operation>``: every operation of :mod:`gateway.control.protocol`."""

    isLeaf = True
    log = Logger()

    def __init__(self, operations: FileOperations, clock: IReactorTime):
        super().__init__()
        self._ops = operations
        self._clock = clock
        self._handlers: dict[str, Handler] = {
            "put": self._put,
            "get": self._get,
            "ls": self._ls,
            "mkdir": self._mkdir,
            "rm": self._rm,
            "mv": self._mv,
            "check": self._check,
            "uploads": self._uploads,
        }

    def render_POST(self, request: Request) -> Any:
        """Run the operation the path names; the answer is written when it is done."""
        path = (request.path or b"").decode("ascii", "replace")
        handler = (
            self._handlers.get(path[len(API_PREFIX) :]) if path.startswith(API_PREFIX) else None
        )
        if handler is None:
            _send_json(request, {"error": "not-found", "message": "no such operation"}, 404)
            return NOT_DONE_YET
        running = Deferred.fromCoroutine(self._run(path[len(API_PREFIX) :], handler, request))
        request.notifyFinish().addErrback(lambda _: running.cancel())
        return NOT_DONE_YET

    async def _run(self, operation: str, handler: Handler, request: Request) -> None:
        try:
            if operation == "put":
                header = request.getHeader(ARGS_HEADER)
                raw = header.encode() if header is not None else None
            else:
                assert request.content is not None
                raw = request.content.read()
            await handler(request, _json_args(raw))
        except CancelledError:
            return
        except Exception as e:
            found = error_kind(e)
            if found is None:
                self.log.failure("control request failed")
                found = ("error", f"internal error ({type(e).__name__}); see the node's log")
            kind, message = found
            if request.finished or request.channel is None:
                return
            if not request.startedWriting:
                _send_json(request, {"error": kind, "message": message}, ERROR_STATUS[kind])
            elif request.responseHeaders.getRawHeaders(b"content-length"):
                transport: Any = request.channel.transport
                transport.abortConnection()  # a short body tells the client
            else:
                request.write(json.dumps({"error": kind, "message": message}).encode() + b"\n")
                request.finish()
        finally:
            if request.content is not None:
                request.content.close()

    async def _put(self, request: Request, args: dict[str, Any]) -> None:
        assert request.content is not None
        request.content.seek(0)
        result = await self._ops.put(
            request.content,
            _optional_str(args, "target"),
            _optional_str(args, "account"),
            _optional_str(args, "name"),
            wait=bool(args.get("wait", True)),
        )
        _send_json(request, result)

    async def _get(self, request: Request, args: dict[str, Any]) -> None:
        readable = await self._ops.open_for_get(
            _str(args, "target"), _optional_str(args, "account")
        )
        try:
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", str(readable.size).encode())
            pacer = _Pacer()
            request.registerProducer(pacer, True)
            offset = 0
            while offset < readable.size and not pacer.stopped:
                chunk = await readable.read(offset, min(COPY_CHUNK, readable.size - offset))
                if not chunk:
                    raise fs_errors.FSError("the file ended before its recorded size")
                offset += len(chunk)
                request.write(chunk)
                await pacer.ready()
            request.unregisterProducer()
            if not pacer.stopped:
                request.finish()
        finally:
            await readable.close()

    async def _ls(self, request: Request, args: dict[str, Any]) -> None:
        target = _optional_str(args, "target") or "/"
        result = await self._ops.ls(target, _optional_str(args, "account"), bool(args.get("caps")))
        _send_json(request, result)

    async def _mkdir(self, request: Request, args: dict[str, Any]) -> None:
        result = await self._ops.mkdir(
            _optional_str(args, "target"), _optional_str(args, "account")
        )
        _send_json(request, result)

    async def _rm(self, request: Request, args: dict[str, Any]) -> None:
        result = await self._ops.rm(
            _str(args, "target"), _optional_str(args, "account"), bool(args.get("recursive"))
        )
        _send_json(request, result)

    async def _mv(self, request: Request, args: dict[str, Any]) -> None:
        result = await self._ops.mv(
            _str(args, "source"),
            _str(args, "dest"),
            _optional_str(args, "account"),
            bool(args.get("force")),
        )
        _send_json(request, result)

    async def _uploads(self, request: Request, args: dict[str, Any]) -> None:
        _send_json(request, self._ops.uploads(retry_now=bool(args.get("retry_now"))))

    async def _check(self, request: Request, args: dict[str, Any]) -> None:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = self._clock.seconds()
            if now - last[0] >= PROGRESS_INTERVAL and not request.finished:
                last[0] = now
                if not request.startedWriting:
                    request.setHeader(b"content-type", b"application/x-ndjson")
                request.write(json.dumps({"progress": [done, total]}).encode() + b"\n")

        result = await self._ops.check(
            _str(args, "target"),
            _optional_str(args, "account"),
            verify=bool(args.get("verify")),
            repair=bool(args.get("repair")),
            deep=bool(args.get("deep")),
            on_progress=progress if args.get("progress") else None,
        )
        if not request.startedWriting:
            request.setHeader(b"content-type", b"application/x-ndjson")
        request.write(json.dumps({"result": result}).encode() + b"\n")
        request.finish()


class ControlSite(Site):
    """A site that spools large bodies into the staging folder and keeps no access log."""

    def __init__(self, resource: Resource, spool: Path):
        super().__init__(resource)
        self._spool = spool

    def getContentFile(self, length: int | None) -> IO[bytes]:
        """Where a request body goes while it arrives."""
        if length is not None and length <= SMALL_BODY:
            return io.BytesIO()
        return tempfile.TemporaryFile(dir=self._spool)

    def log(self, request: http.Request) -> None:
        """No access log: requests are the user's business, not the log's."""
