"""Interchangeable readers for every corpus layout, samplers and the batch pipeline."""
