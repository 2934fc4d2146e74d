"""Shared vocabulary of the studio: schemas, settings, storage, the turn service and the CLI.

Nothing in this package imports torch, diffusers or fastapi.
"""

__version__ = "0.1.0"
