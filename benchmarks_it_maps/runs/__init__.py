"""Running models on benchmarks: scoring, the results database, sweeps, layer selection, the demo."""
