"""Unit tests of the performance work (parsers, windows, read-ahead); nothing here is timed."""
