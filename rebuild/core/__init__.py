"""Lowest layer: plain values (model, errors, config), YAML loading and Kubernetes object facts.

Imports nothing of rebuild above it; every other layer may import it.
"""
