"""Datasets: finding captures, the prepared dataset's manifest, and (for training) loading pairs."""
