"""drawer package."""
