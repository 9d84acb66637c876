"""A/B analysis of a split test by user: lifts with delta-method intervals over users, CUPED, and the
sample-ratio check."""
