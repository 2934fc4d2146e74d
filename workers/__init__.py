"""GPU drawer workers on Celery + Redis: `studio worker` takes draw jobs from its preset's queue and the API's
CeleryDrawer sends them (see docs/scaleout.md). Imports no torch until a worker loads its models."""
