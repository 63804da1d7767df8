"""nursery: a realtime backend for a multi-device todo app, on Trio."""

__version__ = "0.1.0"
