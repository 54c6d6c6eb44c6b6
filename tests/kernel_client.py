"""Drive a real Jupyter kernel: execute code, collect what a notebook would show."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from jupyter_client.manager import KernelManager


@dataclass
class Executed:
    status: str
    outputs: list = field(default_factory=list)

    def text(self) -> str:
        parts = []
        for kind, content in self.outputs:
            if kind == "stream":
                parts.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                parts.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                parts.append("\n".join(content["traceback"]))
        return "".join(parts)

    def error(self) -> dict | None:
        return next((content for kind, content in self.outputs if kind == "error"), None)


class Kernel:
    def __init__(self, name: str, env: dict | None = None, prefix: list[str] | None = None):
        """`prefix`: a command the kernel runs under (e.g. `unshare` to give it its own view of the disk)."""
        env = dict(env if env is not None else os.environ)
        # mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into this process's environment: a kernel must not
        # inherit an earlier test's tracking server (stopped, or hung on purpose); NBSCALE_TRACKING_URI chooses one.
        env.pop("MLFLOW_TRACKING_URI", None)
        self.manager = KernelManager(kernel_name=name)
        if prefix:  # jupyter_client swaps a leading "python" for this interpreter only when it comes first
            argv = self.manager.kernel_spec.argv
            self.manager.kernel_spec.argv = [*prefix, *([sys.executable, *argv[1:]] if argv[0] == "python" else argv)]
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 180) -> Executed:
        result = self._run_once(code, timeout)
        if result.status == "aborted":
            # ipykernel 7 answers an error, then posts "stop aborting" to its shell thread: a request sent the instant
            # the error's reply arrived can land before that and be aborted unexecuted. Sending it again is safe.
            result = self._run_once(code, timeout)
        return result

    def _run_once(self, code: str, timeout: float) -> Executed:
        msg_id = self.client.execute(code)
        result = Executed(status="")
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            if kind in ("stream", "error", "execute_result", "display_data", "update_display_data"):
                result.outputs.append((kind, msg["content"]))
        while True:
            reply = self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                result.status = reply["content"]["status"]
                return result

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
