"""The compile flow: the driver, the output directory, verification (in slices), the user's data, the
mismatch trace, progress on the terminal."""
