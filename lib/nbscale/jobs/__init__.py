"""Long-running Spark work: progress from Spark's status tracker, cancellation by job group."""
