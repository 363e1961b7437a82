"""The filesystem and its handles provide the interfaces frontends program against.

A frontend holds an ``IFilesystem`` per session and an ``IOpenFile`` per open handle, and
calls nothing else: every method the interfaces declare must be there.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from gateway.fs.interfaces import IFilesystem, IOpenFile
from tests.fs.contract.subject import CREATE, READ, Subject


def test_sessions_provide_ifilesystem(subject: Subject) -> None:
    """Read-write and read-only sessions provide IFilesystem."""
    assert verifyObject(IFilesystem, subject.fs)
    assert verifyObject(IFilesystem, subject.session(read_only=True))


def test_handles_provide_iopenfile(subject: Subject) -> None:
    """Handles open for writing and for reading provide IOpenFile."""
    writing = subject.open("/f", CREATE)
    assert verifyObject(IOpenFile, writing)
    subject.run(writing.close())
    reading = subject.open("/f", READ)
    assert verifyObject(IOpenFile, reading)
    subject.run(reading.close())
