"""The composition root: builds the running service from settings (database, image store, models,
conversation engine) and hosts the `studio` command and the background server. It is the only package
that imports every step (api/, agents/, drawer/, vision/); `studio/` stays the shared kernel."""
