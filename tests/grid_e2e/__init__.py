"""End-to-end tests of the object layer on grids of real storage node processes."""
