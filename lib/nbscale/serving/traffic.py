"""What a service's front served, kept for %drift: per model version, JSON lines of the request as the client
sent it, the answer, the latency and the time. Sampled (a fraction of requests), bounded on disk (the oldest
hour files of a version go first once it holds more than its limit), written off the request path (the
front flushes once a second in a thread) and never parsed there: the front appends the bytes it already has.

    <traffic dir>/<model>/v<N>/<YYYYmmddTHH>-<front pid>.jsonl
    {"t": 1764500000.1, "latency_ms": 3.2, "request": {...}, "response": {"predictions": [...]}}
"""
from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from ..contracts import ModelVersion

MAX_RECORD_BYTES = 1 << 20  # a larger request (a big batch) is answered but not recorded
MAX_PENDING = 5000  # records waiting for the next flush; beyond it they are dropped (and counted)


def version_folder(root: Path, label: str) -> Path:
    """The folder of model version `label` ("digits v3")."""
    model = ModelVersion.from_label(label)
    return root / model.name.replace(os.sep, "_") / f"v{model.version}"


class TrafficLog:
    def __init__(self, root: str, max_bytes: int, sample: float = 1.0):
        self.root, self.max_bytes, self.sample = Path(root), max_bytes, sample
        self.pending: list[tuple[str, bytes]] = []
        self.dropped = 0
        self.lock = threading.Lock()

    def add(self, label: str, request: bytes, response: bytes, latency_ms: float) -> None:
        if self.sample < 1 and random.random() >= self.sample:
            return
        if len(request) + len(response) > MAX_RECORD_BYTES or len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        # Bodies the replica answered 200 are JSON; a raw newline in JSON is only whitespace, so a line stays one record.
        line = b'{"t":%.3f,"latency_ms":%.2f,"request":%s,"response":%s}\n' % (
            time.time(), latency_ms, request.replace(b"\n", b" ").replace(b"\r", b" "), response.replace(b"\n", b" ").replace(b"\r", b" "))
        with self.lock:
            self.pending.append((label, line))

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        by_label: dict[str, list[bytes]] = {}
        for label, line in pending:
            by_label.setdefault(label, []).append(line)
        hour = time.strftime("%Y%m%dT%H", time.gmtime())
        for label, lines in by_label.items():
            folder = version_folder(self.root, label)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(folder / f"{hour}-{os.getpid()}.jsonl", "ab") as f:
                f.write(b"".join(lines))
            self._bound(folder)

    def _bound(self, folder: Path) -> None:
        """Drop a version's oldest files while it holds more than max_bytes (the newest is kept whatever its size)."""
        files = sorted(folder.glob("*.jsonl"), key=lambda p: p.name)
        sizes = [p.stat().st_size for p in files]
        while len(files) > 1 and sum(sizes) > self.max_bytes:
            files.pop(0).unlink(missing_ok=True)
            sizes.pop(0)
        if files and sizes[0] > self.max_bytes:  # one file over the limit: keep its newest half
            data = files[0].read_bytes()
            cut = data.find(b"\n", len(data) // 2) + 1
            files[0].write_bytes(data[cut:])
