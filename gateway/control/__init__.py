"""The control endpoint: how the ``gateway`` command reaches a running gateway node."""
