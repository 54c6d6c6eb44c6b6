"""`%jobs`: this kernel's background jobs; `%jobs cancel ID`. `%pool`: the Spark pools its jobs share."""
from __future__ import annotations

import html
import time

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help
from IPython.display import HTML


def jobs_card(rows) -> str:
    if not rows:
        return "<div>No background jobs in this kernel: start one with <code>%%train ... --background</code>.</div>"
    cells = "".join(
        f"<tr><td>{j.id}</td><td>{html.escape(j.title)}</td><td>{j.state}</td><td>{html.escape(_progress(j))}</td>"
        f"<td>{(j.ended or time.time()) - j.started:.0f} s</td><td>{html.escape(j.error or '')}</td></tr>" for j in rows)
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("job", "what", "state", "progress", "time", "error"))
    return f"<table><tr>{head}</tr>{cells}</table>"


def _progress(job) -> str:
    workers = job.handle.workers_line() if job.state == "running" and hasattr(job.handle, "workers_line") else ""
    return job.progress + (f" — {workers}" if workers else "")


@magics_class
class JobsMagics(Magics):
    @accepts_help
    @magic_arguments()
    @argument("action", nargs="?", default="list", choices=["list", "cancel", "kill", "wait"],
              help="list (default); cancel JOB; kill JOB RANK: kill one worker of a distributed job (it resumes); "
                   "wait JOB [--epoch N]: block until the job ends (or has done N epochs).")
    @argument("job", nargs="?", type=int, help="Job id, for cancel and kill.")
    @argument("rank", nargs="?", type=int, help="Worker rank, for kill.")
    @argument("--epoch", type=int, help="For wait: return once this many epochs are done.")
    @argument("--timeout", type=float, default=600, help="For wait: give up after this many seconds (default 600).")
    @line_magic
    def jobs(self, line):
        """List this kernel's background jobs (state, progress per worker, time), cancel one (%jobs cancel 2),
        or kill one worker of a distributed job to watch Spark rerun it and training resume (%jobs kill 2 1)."""
        from ..jobs import background

        args = parse_argstring(self.jobs, line)
        if args.action == "wait":
            from ..errors import NbscaleError

            if args.job is None:
                raise NbscaleError("Which job? Write %jobs wait ID [--epoch N] (ids are in %jobs).")
            job = background.get(args.job)
            if args.epoch:
                job.wait_for_epoch(args.epoch, args.timeout)
                print(f"Job {job.id} has finished epoch {args.epoch}." if job.epochs_done >= args.epoch
                      else f"Job {job.id} ended ({job.state}) after {job.epochs_done} epoch(s)." + (f" {job.error}" if job.error else ""))
            else:
                job.wait(args.timeout)
                print(f"Job {job.id} is {job.state}." + (f" {job.error}" if job.error else ""))
            return None
        if args.action == "kill":
            from ..distributed import kill_worker
            from ..errors import NbscaleError

            if args.job is None or args.rank is None:
                raise NbscaleError("Which worker? Write %jobs kill JOB RANK (ranks are on the job's card).")
            run = background.get(args.job).handle
            if run is None or not hasattr(run, "id"):
                raise NbscaleError(f"Job {args.job} is not a distributed training: only workers of %%train --workers jobs can be killed.")
            print(kill_worker(run.id, args.rank))
            return None
        if args.action == "cancel":
            if args.job is None:
                from ..errors import NbscaleError

                raise NbscaleError("Which job? Write %jobs cancel ID (ids are in %jobs).")
            job = background.cancel(args.job)
            print(f"Job {job.id} ({job.title}): stop requested; it stops after the current batch." if job.state == "running"
                  else f"Job {job.id} is already {job.state}.")
            return None
        return HTML(jobs_card(background.jobs()))

    @accepts_help
    @magic_arguments()
    @argument("name", nargs="?", help="Run this notebook's next Spark jobs in this fair-scheduler pool ('default': Spark's own).")
    @line_magic
    def pool(self, line):
        """Spark fair-scheduler pools: %pool shows them (weight, running tasks); %pool interactive runs the
        following cells' Spark jobs in that pool. Pools and weights: %config Nbscale.pools = {'interactive': 4, 'background': 1}."""
        from .. import scheduling

        name = parse_argstring(self.pool, line).name
        if name:
            scheduling.use_pool(name)
        return scheduling.pools()
