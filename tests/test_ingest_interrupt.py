"""Interrupting the kernel during a long %%ingest cancels its Spark jobs and publishes nothing."""
import time

import pytest
from kernel_client import Kernel

pytestmark = pytest.mark.slow


def test_interrupt_cancels_the_jobs_and_keeps_the_session(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("id,a,b,c\n")
        for start in range(0, 3_000_000, 100_000):
            f.write("".join(f"{i},{i * 3},{i % 7},x{i % 11}\n" for i in range(start, start + 100_000)))
    with Kernel("nbscale-local") as kernel:
        assert kernel.run("import nbscale; spark = nbscale.spark(); print(spark.range(3).count())").text().strip() == "3"
        msg_id = kernel.client.execute(f"%%ingest big\n{big}")
        time.sleep(6)
        started = time.monotonic()
        kernel.manager.interrupt_kernel()
        reply = kernel.client.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kernel.client.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 20
        check = kernel.run(
            "import time\n"
            "for _ in range(40):\n"
            "    if not spark.sparkContext.statusTracker().getActiveJobsIds(): break\n"
            "    time.sleep(0.25)\n"
            "from nbscale.ingest import store\n"
            "print(spark.sparkContext.statusTracker().getActiveJobsIds(), store.versions('big'),\n"
            "      [p.name for p in (store.root() / 'big').glob('.staging-*')] if (store.root() / 'big').exists() else [],\n"
            "      spark.range(5).count())"
        )
        assert check.text().strip() == "[] [] [] 5"
