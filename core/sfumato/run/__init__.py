"""Running graphs: validation and planning, the one scheduler, the engine and
per-run state, sweeps, run reports and the metadata saved with images."""
