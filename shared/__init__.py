"""Code every Collect Tasks service shares: configuration, database, task state, control."""
