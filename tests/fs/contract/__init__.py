"""The contract of :class:`~gateway.fs.interfaces.IFilesystem`, run in memory.

Every test says one thing a frontend (and so a user) relies on, and checks it through
``IFilesystem`` and ``IOpenFile`` alone. The filesystem under test comes from the
``subject`` fixture (:mod:`tests.fs.contract.conftest`), a
:class:`~tests.fs.contract.subject.Subject`: any implementation that can say how to
run a call, let time pass and let uploads land can run the whole suite.
"""
