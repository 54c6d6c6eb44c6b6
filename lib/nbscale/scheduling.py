"""Sharing one Spark application between a notebook's jobs: fair-scheduler pools with weights.

nbscale starts Spark in FAIR mode with the pools of `Nbscale.pools` (an allocation file written at
session start). A job runs in the pool its thread names: `with pool("background"): ...`, `%pool NAME`
for the following cells, `%%train --workers N --pool NAME` for a distributed training. While two
pools wait for task slots, each freed slot goes to the pool furthest below its weighted share, so a
long batch job in `background` does not hold an `interactive` query behind all its tasks, as FIFO
would. (Gang scheduling — all of a barrier job's tasks together or none — is `nbscale.distributed`.)"""
from __future__ import annotations

import contextlib
import html

from .config import settings
from .errors import NbscaleError

POOL_PROPERTY = "spark.scheduler.pool"
SPARK_DEFAULT_POOL = "default"  # Spark's own pool for jobs that name none (weight 1)
POOLS_NEED_A_SPARKCONTEXT = "fair-scheduler pools are a setting of the SparkContext, which a Connect client does not have"


def check_pool(name: str) -> str:
    """`name` if Spark knows it as a pool; else one line saying how to define it."""
    known = settings().pools
    if name != SPARK_DEFAULT_POOL and name not in known:
        raise NbscaleError(f"There is no Spark pool {name!r} (pools: {', '.join([SPARK_DEFAULT_POOL, *known])}): "
                           f"define it with %config Nbscale.pools = {{**Nbscale.pools, {name!r}: 1}} before Spark starts.")
    return name


def use_pool(name: str | None) -> str | None:
    """Run this thread's next Spark jobs in pool `name` (None or "default": Spark's default pool); the previous one."""
    from .datahost import classic_only
    from .session import spark

    if name not in (None, SPARK_DEFAULT_POOL):
        classic_only(f"Spark pool {name!r}", POOLS_NEED_A_SPARKCONTEXT)
    sc = spark().sparkContext
    previous = sc.getLocalProperty(POOL_PROPERTY)
    sc.setLocalProperty(POOL_PROPERTY, None if name in (None, SPARK_DEFAULT_POOL) else check_pool(name))
    return previous


@contextlib.contextmanager
def pool(name: str):
    """`with pool("background"): df.write...`: the block's Spark jobs run in that fair-scheduler pool."""
    previous = use_pool(name)
    try:
        yield
    finally:
        use_pool(previous)


def current_pool() -> str:
    from .session import spark

    return spark().sparkContext.getLocalProperty(POOL_PROPERTY) or SPARK_DEFAULT_POOL


class PoolsCard:
    def __init__(self, rows: list[dict], current: str):
        self.rows, self.current = rows, current

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("pool", "weight", "running tasks", "active stages"))
        body = "".join(f"<tr><td>{html.escape(r['pool'])}{' ◀ this notebook' if r['pool'] == self.current else ''}</td>"
                       f"<td>{r['weight']}</td><td>{r['running_tasks']}</td><td>{r['active_stages']}</td></tr>" for r in self.rows)
        return f"<div class='nbscale-pools'><table><tr>{head}</tr>{body}</table></div>"

    def __repr__(self) -> str:
        return "\n".join(f"{r['pool']}: weight {r['weight']}, {r['running_tasks']} running tasks, {r['active_stages']} active stages"
                         + (" (this notebook's cells)" if r["pool"] == self.current else "") for r in self.rows)


def pools() -> PoolsCard:
    """The pools with their weights and what runs in each now, as Spark's task scheduler holds them (not its web UI:
    the UI's REST API lags the scheduler, and its first request loads a web framework, which took over 10 s on a busy
    machine)."""
    from .datahost import classic_only
    from .session import spark

    classic_only("%pool", POOLS_NEED_A_SPARKCONTEXT)
    sc = spark().sparkContext
    running = _scheduler_pools(sc)
    order = [SPARK_DEFAULT_POOL, *settings().pools, *running]
    rows = [{"pool": name, "weight": running[name][0], "running_tasks": running[name][1], "active_stages": running[name][2]}
            for name in dict.fromkeys(order) if name in running]
    return PoolsCard(rows, current_pool())


def _scheduler_pools(sc) -> dict[str, tuple[int, int, int]]:
    """Pool name -> (weight, running tasks, active task sets), from `SparkContext.getAllPools` (a developer API). In
    FIFO mode (a spark_conf override) the scheduler's root queue holds the task sets themselves: one default pool."""
    queue = sc._jsc.sc().getAllPools()
    entries = [queue.apply(i) for i in range(queue.size())]
    if any(entry.getClass().getSimpleName() != "Pool" for entry in entries) or not entries:
        return {SPARK_DEFAULT_POOL: (1, sum(entry.runningTasks() for entry in entries), len(entries))}
    return {entry.name(): (entry.weight(), entry.runningTasks(), entry.schedulableQueue().size()) for entry in entries}
