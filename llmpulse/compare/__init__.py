"""Canary comparisons: is a candidate (prompt, model, variant) worse than its baseline."""
