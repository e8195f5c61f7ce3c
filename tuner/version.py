"""The version of tuner, as its package metadata and profiles give it."""

__version__ = "0.1.0"
