"""scenemtl: multi-task dense scene understanding."""

__version__ = "0.1.0"
