"""The grid client: talking to storage servers (remote over HTTPS, or embedded in-process)."""
