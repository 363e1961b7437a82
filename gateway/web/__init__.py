"""The gateway's web frontend: the status page and its JSON twins."""
