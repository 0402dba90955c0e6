"""tlkit: transfer learning with measurements."""

__version__ = "0.1.0"
