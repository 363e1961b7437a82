"""Storage server nodes that keep opaque shares and speak Tahoe-LAFS's HTTP storage protocol."""
