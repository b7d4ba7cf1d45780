"""Datasets: adapters that turn a download into an index, splits, demo data, image cache."""
