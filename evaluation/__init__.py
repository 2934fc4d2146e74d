"""CMIGBench evaluation: the batch runner (same turn code path as the service) and the paper's metrics.

Public entry points:

- `evaluation.runner.run_benchmark` — draw every dialogue of a CMIGBench-form file, resumably;
- `evaluation.scoring.score_run` — aCCS / aFID / aTIS (story) or the four editing accuracies;
- `evaluation.cli.bench_app` — the typer sub-app mounted as `studio bench`.
"""
