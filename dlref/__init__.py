"""dlref: the chapters of *Deep Learning Quick Reference* as ready Keras recipes.

Importing this package never imports TensorFlow: the CLI's fast commands depend on it.
"""

__version__ = "0.1.0"
