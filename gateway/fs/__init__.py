"""The gateway's filesystem layer: paths onto directory objects, open-file state and staging."""
