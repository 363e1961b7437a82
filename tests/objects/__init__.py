"""Tests of the gateway's object layer."""
