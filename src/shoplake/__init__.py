"""shoplake: a local-first e-commerce lakehouse on Delta Lake."""

__version__ = "0.1.0"
