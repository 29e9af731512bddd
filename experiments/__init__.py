"""Experiments: thin scripts over jaxlaw; run as ``python -m experiments.<study>.run``."""
