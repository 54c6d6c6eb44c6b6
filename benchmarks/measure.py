"""What every benchmark prints of its repeated runs: min / median / max."""
import statistics


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
