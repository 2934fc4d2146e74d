"""The drawer: Parallel-UNet, subject-initialized generation and editing on diffusers pipelines."""

from drawer.core import Drawer, load_drawer
from drawer.standin import PlannedBoxLocator

__all__ = ["Drawer", "PlannedBoxLocator", "load_drawer"]
