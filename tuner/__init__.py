"""tuner: find the fastest way to serve a large language model on a given GPU, by measurement.

Importing this package imports neither torch nor any inference engine; those load inside the
worker process that runs a trial.
"""

__version__ = "0.1.0"
