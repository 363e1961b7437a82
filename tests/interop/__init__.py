"""Interoperability proofs against unmodified Tahoe-LAFS 1.20 nodes run as real processes."""
