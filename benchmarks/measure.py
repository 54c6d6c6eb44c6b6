"""What every benchmark shares: min / median / max of its repeated runs, and a data dir of its own."""
import os
import shutil
import statistics
import tempfile
from contextlib import contextmanager


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


@contextmanager
def scratch_data_dir(name: str):
    """NBSCALE_DATA_DIR for one benchmark run: the caller's, left as it is, or a fresh temporary one, removed when the
    run succeeds (a 1 M-row feed run writes about 10 GB) and kept when it fails, for its logs."""
    if os.environ.get("NBSCALE_DATA_DIR"):
        yield os.environ["NBSCALE_DATA_DIR"]
        return
    folder = os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix=f"nbscale-bench-{name}-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
