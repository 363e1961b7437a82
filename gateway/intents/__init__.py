"""Intents: what the gateway acknowledged and has not yet done in the grid, kept durably,
and when to carry them out (uploads and directory changes share both)."""
