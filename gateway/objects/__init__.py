"""The object layer: capabilities, and immutable, mutable and directory objects on the grid.

Bytes become encrypted, erasure-coded shares addressed by a capability, and back.
This package knows the storage protocol only through
:class:`gateway.grid.interfaces.IStorageClient`; it knows nothing of SFTP or HTTP.
"""
