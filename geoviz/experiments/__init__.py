"""Ready-made experiments: a frozen config (profiles smoke / quick / full) and a runner that
trains, measures and returns plain results. Notebooks and ``geoviz`` CLI commands call these."""
