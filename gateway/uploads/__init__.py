"""The upload queue: journaled background uploads to the grid."""
