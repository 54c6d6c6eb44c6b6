"""`%jobs`: this kernel's background jobs; `%jobs cancel ID`."""
from __future__ import annotations

import html
import time

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML


def jobs_card(rows) -> str:
    if not rows:
        return "<div>No background jobs in this kernel: start one with <code>%%train ... --background</code>.</div>"
    cells = "".join(
        f"<tr><td>{j.id}</td><td>{html.escape(j.title)}</td><td>{j.state}</td><td>{html.escape(j.progress)}</td>"
        f"<td>{(j.ended or time.time()) - j.started:.0f} s</td><td>{html.escape(j.error or '')}</td></tr>" for j in rows)
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("job", "what", "state", "progress", "time", "error"))
    return f"<table><tr>{head}</tr>{cells}</table>"


@magics_class
class JobsMagics(Magics):
    @magic_arguments()
    @argument("action", nargs="?", default="list", choices=["list", "cancel"], help="list (default) or cancel a job.")
    @argument("job", nargs="?", type=int, help="Job id, for cancel.")
    @line_magic
    def jobs(self, line):
        """List this kernel's background jobs (state, progress, time), or cancel one: %jobs cancel 2."""
        from ..jobs import registry

        args = parse_argstring(self.jobs, line)
        if args.action == "cancel":
            if args.job is None:
                from ..errors import NbscaleError

                raise NbscaleError("Which job? Write %jobs cancel ID (ids are in %jobs).")
            job = registry.cancel(args.job)
            print(f"Job {job.id} ({job.title}): stop requested; it stops after the current batch." if job.state == "running"
                  else f"Job {job.id} is already {job.state}.")
            return None
        return HTML(jobs_card(registry.jobs()))
