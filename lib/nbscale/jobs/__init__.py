"""Long-running work: background jobs of this kernel, Spark progress, cancellation."""
