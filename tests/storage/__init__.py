"""Tests of the storage server core and its backends."""
