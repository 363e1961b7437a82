"""Tests of the gateway grid client layer (HTTP storage client, embedded local client)."""
