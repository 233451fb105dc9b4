"""Held-out evaluation: metrics and decoding passes over a dataset."""
