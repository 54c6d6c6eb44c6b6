"""The front of a served model: one URL before N replica servers (the replicated-services pattern).

It balances requests round-robin over the healthy replicas of a side, splits traffic between a
primary and a canary side by weight (smooth weighted round-robin: exact shares over any 100
requests), checks every replica's /ping each second and takes a dead one out (a refused connection
at once, a slow answer after three misses), retries a request that meets a dead replica on the next
(replicas marked down are still tried last: a mark is a hint, a refused connection is proof), and
counts requests, errors and latency per side. A client sees
an error only when every replica is down: a 503 naming the model.

    python -m nbscale.serving.front HOST PORT CONFIG_JSON_FILE

With "shard_by": COLUMN in the config (one side), each replica holds a shard: the rows of a request
are routed by a stable hash of their COLUMN value, so a key always reaches the same replica.

Config: {"name": "...", "shard_by": null, "sides": [{"label": "fashion-cnn v3", "weight": 90, "replicas": ["http://127.0.0.1:5001", ...]}, ...]}.
POST /nbscale/config replaces it (counters of a side with the same label carry on); GET
/nbscale/stats returns the counters.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import sys
import time
import zlib

from ..contracts import FrontConfig
from .traffic import TrafficLog

HEALTH_EVERY_S = 1.0
PING_TIMEOUT_S = 3.0
SLOW_PINGS_TO_DOWN = 3
LATENCIES_KEPT = 2000
TRAFFIC_FLUSH_S = 1.0


class Side:
    def __init__(self, label: str, weight: float, replicas: list[str]):
        self.label, self.weight, self.replicas = label, weight, list(replicas)
        self.healthy = {url: True for url in self.replicas}  # trusted until a check or a request says otherwise
        self.next = 0
        self.current = 0.0  # smooth weighted round-robin state
        self.requests = self.errors = 0
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)

    def live(self) -> list[str]:
        """Replicas to try, starting from the next one in turn: the healthy ones, then the others (a
        health mark is a hint from the last check; only a refused connection is proof)."""
        order = self.replicas[self.next:] + self.replicas[:self.next]
        self.next = (self.next + 1) % max(len(self.replicas), 1)
        return [url for url in order if self.healthy[url]] + [url for url in order if not self.healthy[url]]

    def stats(self) -> dict:
        ordered = sorted(self.latencies_ms)
        pick = (lambda q: round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 2)) if ordered else (lambda q: None)
        return {"label": self.label, "weight": self.weight, "requests": self.requests, "errors": self.errors,
                "replicas": [{"url": u, "healthy": self.healthy[u]} for u in self.replicas],
                "p50_ms": pick(0.5), "p95_ms": pick(0.95)}


class Front:
    def __init__(self, config: FrontConfig):
        self.sides: list[Side] = []
        # Set once, from the file the kernel wrote (mode 0600); a POST can never change them.
        self.secret = str(config.get("secret", ""))
        self.max_body = int(config.get("max_body_bytes", 64 << 20))
        traffic = config.get("traffic")
        self.traffic = TrafficLog(traffic["dir"], int(traffic["max_bytes"]), float(traffic.get("sample", 1.0))) if traffic else None
        self.apply(config)
        self.started = time.time()

    def authorized(self, headers) -> bool:
        """The control routes answer only the kernel that started this front (constant-time compare)."""
        given = headers.get("authorization", "")
        return bool(self.secret) and hmac.compare_digest(given.encode(), f"Bearer {self.secret}".encode())

    def apply(self, config: FrontConfig) -> None:
        old = {side.label: side for side in self.sides}
        sides = []
        for spec in config["sides"]:
            side = Side(spec["label"], float(spec["weight"]), spec["replicas"])
            if spec["label"] in old:  # same model version: its counters go on
                kept = old[spec["label"]]
                side.requests, side.errors, side.latencies_ms = kept.requests, kept.errors, kept.latencies_ms
            sides.append(side)
        self.name = config["name"]
        self.shard_by = config.get("shard_by")
        self.sides = sides

    def pick(self) -> list[Side]:
        """The side this request goes to (by weight), then the others as fallbacks."""
        weighted = [s for s in self.sides if s.weight > 0]
        for side in weighted:
            side.current += side.weight
        chosen = max(weighted, key=lambda s: s.current)
        chosen.current -= sum(s.weight for s in weighted)
        return [chosen] + [s for s in self.sides if s is not chosen]


def shard_of(key, shards: int) -> int:
    """A stable shard for a key: the same key goes to the same replica in every process and run."""
    return zlib.crc32(str(key).encode()) % shards


def shard_rows(payload: dict, key: str, shards: int):
    """A dataframe_split / dataframe_records request -> ({shard: rows without the key}, columns, {shard: row positions})."""
    if "dataframe_split" in payload:
        columns, data = payload["dataframe_split"]["columns"], payload["dataframe_split"]["data"]
    elif "dataframe_records" in payload:
        records = payload["dataframe_records"]
        columns = list(records[0]) if records else []
        data = [[record.get(c) for c in columns] for record in records]
    else:
        raise ValueError(f"A sharded service routes by the column {key!r}: send dataframe_split or dataframe_records with it.")
    if key not in columns:
        raise ValueError(f"The request has no column {key!r}, which this service is sharded by.")
    at = columns.index(key)
    kept = [c for i, c in enumerate(columns) if i != at]
    groups: dict[int, list] = {}
    order: dict[int, list[int]] = {}
    for position, row in enumerate(data):
        shard = shard_of(row[at], shards)
        groups.setdefault(shard, []).append([v for i, v in enumerate(row) if i != at])
        order.setdefault(shard, []).append(position)
    return groups, kept, order


def make_app(front: Front):
    """The front's web app: aiohttp's server and client, both with C parsers, on one event loop (Starlette + httpx
    spent as much CPU per request as the replica's model did: a batch-1 service ran at half the replica's rate)."""
    import aiohttp
    from aiohttp import web

    def json_answer(payload: dict, status: int = 200, headers: dict | None = None):
        return web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json", headers=headers)

    async def forward(url: str, side: Side, body: bytes, content_type: str):
        """One replica's answer as (status, content type, body), or None if it is gone (then it is marked down)."""
        try:
            async with app["client"].post(f"{url}/invocations", data=body, headers={"content-type": content_type}) as answer:
                content = await answer.read()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError):  # refused, reset or silent: that replica is gone
            side.healthy[url] = False
            return None
        side.healthy[url] = True
        return answer.status, answer.headers.get("content-type", "application/json"), content

    async def sharded(body: bytes):
        """Rows grouped by shard (a stable hash of the key column), each group to the replica holding that
        shard, answers merged back in the request's row order."""
        side, key = front.sides[0], front.shard_by
        try:
            groups, columns, order = shard_rows(json.loads(body), key, len(side.replicas))
        except (ValueError, KeyError, TypeError) as error:
            return json_answer({"error_code": "BAD_REQUEST", "message": f"{error}"}, 400)
        started = time.perf_counter()
        answers = await asyncio.gather(*[forward(side.replicas[shard], side, json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode(),
                                                 "application/json") for shard, rows in groups.items()])
        merged: list = [None] * sum(map(len, order.values()))
        for (shard, _rows), answer in zip(groups.items(), answers):
            if answer is None or answer[0] != 200:
                side.errors += 1
                if answer is None:
                    return json_answer({"error_code": "SERVICE_UNAVAILABLE", "message": f"Shard {shard} of {front.name} is down: "
                                        "its keys cannot be answered until it is served again."}, 503)
                return web.Response(body=answer[2], status=answer[0], content_type="application/json")
            for position, prediction in zip(order[shard], json.loads(answer[2])["predictions"]):
                merged[position] = prediction
        side.requests += 1
        side.latencies_ms.append((time.perf_counter() - started) * 1000)
        content = json.dumps({"predictions": merged}).encode()
        if front.traffic:
            front.traffic.add(side.label, body, content, side.latencies_ms[-1])
        return web.Response(body=content, content_type="application/json", headers={"x-nbscale-shards": ",".join(map(str, groups))})

    async def bounded_body(request) -> bytes | None:
        """The request's body, or None when it is larger than the front accepts (checked before and while reading)."""
        if request.content_length is not None and request.content_length > front.max_body:
            return None
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > front.max_body:
                return None
        return bytes(body)

    def too_large():
        return json_answer({"error_code": "REQUEST_TOO_LARGE", "message": f"The request body is over {front.max_body} bytes "
                            "(Nbscale.max_request_mb): send fewer rows per request."}, 413)

    def refused(request):
        """None when a control request may proceed, else the answer: 401 without the kernel's secret, 415 unless JSON."""
        if not front.authorized(request.headers):
            return json_answer({"error_code": "UNAUTHENTICATED", "message": "This route needs the service's secret."}, 401)
        if request.method == "POST" and request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return json_answer({"error_code": "UNSUPPORTED_MEDIA_TYPE", "message": "Send application/json."}, 415)
        return None

    async def invocations(request):
        body = await bounded_body(request)
        if body is None:
            return too_large()
        if front.shard_by:
            return await sharded(body)
        content_type = request.headers.get("content-type", "application/json")
        started = time.perf_counter()
        for side in front.pick():
            for url in side.live():
                answer = await forward(url, side, body, content_type)
                if answer is None:
                    continue
                status, answer_type, content = answer
                side.requests += 1
                side.latencies_ms.append((time.perf_counter() - started) * 1000)
                if status >= 400:
                    side.errors += 1
                elif front.traffic:
                    front.traffic.add(side.label, body, content, side.latencies_ms[-1])
                return web.Response(body=content, status=status, headers={"content-type": answer_type, "x-nbscale-served-by": side.label})
        return json_answer({"error_code": "SERVICE_UNAVAILABLE",
                            "message": f"No healthy replica of {front.name} is left: start it again with %serve."}, 503)

    async def ping(request):
        up = any(any(side.healthy.values()) for side in front.sides)
        return web.Response(text="\n" if up else "no healthy replica\n", status=200 if up else 503)

    async def stats(request):
        if (answer := refused(request)) is not None:
            return answer
        return json_answer({"name": front.name, "uptime_s": round(time.time() - front.started, 1),
                            "sides": [side.stats() for side in front.sides]})

    async def configure(request):
        if (answer := refused(request)) is not None:
            return answer
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            front.apply(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            return json_answer({"error_code": "BAD_REQUEST", "message": f"Not a front configuration: {exc}"}, 400)
        return json_answer({"ok": True})

    async def check_health():
        slow: collections.Counter[str] = collections.Counter()
        while True:
            for side in list(front.sides):
                for url in list(side.replicas):
                    try:
                        async with app["client"].get(f"{url}/ping", timeout=aiohttp.ClientTimeout(total=PING_TIMEOUT_S)) as answer:
                            side.healthy[url] = answer.status == 200
                        slow[url] = 0
                    except aiohttp.ClientConnectorError:
                        side.healthy[url] = False
                    except (aiohttp.ClientError, asyncio.TimeoutError):  # a busy replica answers late: down only after several misses
                        slow[url] += 1
                        side.healthy[url] = slow[url] < SLOW_PINGS_TO_DOWN
            await asyncio.sleep(HEALTH_EVERY_S)

    async def record_traffic():
        while True:
            await asyncio.sleep(TRAFFIC_FLUSH_S)
            with contextlib.suppress(OSError):  # a full disk loses records, never requests
                await asyncio.to_thread(front.traffic.flush)

    async def lifespan(app):
        # Keep-alive connections to the replicas, reused across requests.
        app["client"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=2),
                                              connector=aiohttp.TCPConnector(limit=200), auto_decompress=False)
        tasks = [asyncio.create_task(check_health())] + ([asyncio.create_task(record_traffic())] if front.traffic else [])
        yield
        for task in tasks:
            task.cancel()
        await app["client"].close()
        if front.traffic:
            with contextlib.suppress(OSError):
                front.traffic.flush()

    # client_max_size bounds only request.read(); bounded_body reads the stream itself, with its own 413 message.
    app = web.Application(client_max_size=front.max_body + 1)
    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ping)
    app.router.add_get("/health", ping)
    app.router.add_get("/nbscale/stats", stats)
    app.router.add_post("/nbscale/config", configure)
    return app


def routes(app) -> set[str]:
    """The paths the app answers."""
    return {resource.canonical for resource in app.router.resources()}


def main(argv: list[str]) -> int:
    from ..processes import die_with_parent

    die_with_parent()
    host, port, config_path = argv
    from aiohttp import web

    with open(config_path) as f:
        front = Front(json.load(f))
    web.run_app(make_app(front), host=host, port=int(port), print=None, access_log=None, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
