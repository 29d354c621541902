"""Siamese networks and face verification (hook implementations only)."""
