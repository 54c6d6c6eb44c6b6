"""A child nbscale starts never outlives its parent, also where Linux's parent-death signal does not exist
(macOS): the portable watch thread alone is tested here, with prctl left unset."""
import subprocess
import sys
import time

import psutil


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def orphan_after_parent_killed(child_code: str) -> tuple[int, bool]:
    """Start parent -> child, SIGKILL the parent, and say whether the child is still alive 5 s later."""
    parent_code = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child_code!r}], stdout=sys.stdout)\n"
                   "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    return child, alive(child)


def test_an_orphan_ends_by_the_watch_thread_alone():
    code = ("import os, time\nfrom nbscale.processes import watch_parent\nwatch_parent(every_s=0.1)\n"
            "print(os.getpid(), flush=True)\ntime.sleep(120)\n")
    child, still_alive = orphan_after_parent_killed(code)
    assert not still_alive, f"child {child} outlived its killed parent"


def test_without_it_the_orphan_would_stay():
    """The control: the same child without the watch outlives its parent (so the test above can fail)."""
    child, still_alive = orphan_after_parent_killed("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")
    try:
        assert still_alive
    finally:
        if alive(child):
            psutil.Process(child).kill()
