"""Ready-made experiments: a frozen config (profiles smoke / quick / full) and a runner that
trains, measures and returns plain results. Notebooks and ``geoviz`` CLI commands call these."""


class SavesSummary:
    """For result objects with ``experiment`` (a RunDir or None) and ``summary()``."""

    def save_metrics(self) -> dict:
        """Write ``summary()`` into the experiment's ``metrics.json`` and return what was written."""
        return self.experiment.write_summary(**self.summary())["summary"] if self.experiment else self.summary()
