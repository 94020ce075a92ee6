"""Call counters for `python -m bench.trace`, injected into the engine processes only.

The trace puts this directory first on PYTHONPATH and sets BENCH_TRACE_DIR in the
environment it gives the engine processes; Python imports `sitecustomize` at startup,
before any engine code, so the patches below are in place before anything is imported
or any thread starts. Without BENCH_TRACE_DIR this module does nothing.

It wraps library entry points generically (it never imports the engine): pykka's
`ActorRef.tell`/`ask`, `ThreadPoolExecutor.submit`, the event loops'
`call_soon_threadsafe` and timers, `threading.Thread.start`, `threading.Condition`'s
`notify`/`notify_all`/`wait`, `time.sleep`, the json module's encoder and decoder and
orjson's `dumps`/`loads` when installed. Counts are kept per thread (no lock, no lost
update) and written, totalled per thread, to `$BENCH_TRACE_DIR/<pid>.json` on SIGUSR1.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time

_DIR = os.environ.get("BENCH_TRACE_DIR")
_ENCODE = json.JSONEncoder.encode  # the original, so writing the dump is not itself counted
_local = threading.local()
_threads: list[tuple[str, dict[str, int]]] = []  # (thread name, its counts), threads that exited included
_threads_lock = threading.Lock()


def _thread_counts() -> dict[str, int]:
    """This thread's counters, registered on first use."""
    try:
        return _local.counts
    except AttributeError:
        counts = _local.counts = {}
        with _threads_lock:
            _threads.append((_thread_name(), counts))
        return counts


def _thread_name() -> str:
    """This thread's name, without threading.current_thread(): for a thread it does not
    know that would build a _DummyThread, whose Event calls the patched notify, and recurse."""
    ident = threading.get_ident()
    known = threading._active.get(ident)  # noqa: SLF001
    if known is None:  # a starting thread counts its `started` event before it is listed as active
        known = next((t for t in list(threading._limbo) if t.ident == ident), None)  # noqa: SLF001
    return known.name if known else f"thread-{ident}"


def count(key: str, n: int = 1) -> None:
    """Add `n` to this thread's counter `key`."""
    counts = _thread_counts()
    counts[key] = counts.get(key, 0) + n


def _counting(original, key: str):
    """`original`, counting every call under `key`."""
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        count(key)
        return original(*args, **kwargs)
    return wrapper


def _patch(owner, name: str, key: str) -> None:
    setattr(owner, name, _counting(getattr(owner, name), key))


# ---- threads and wake-ups ------------------------------------------------------------------

def _patch_threading() -> None:
    _patch(threading.Thread, "start", "thread.start")
    notify, notify_all, wait = threading.Condition.notify, threading.Condition.notify_all, threading.Condition.wait

    def counted_notify(self, n=1):
        # Caller holds the lock, so the waiters list is stable: these are the threads woken.
        woken = min(n, len(getattr(self, "_waiters", ())))
        count("condition.notify")
        if woken:
            count("condition.woken", woken)
        return notify(self, n)

    def counted_notify_all(self):
        count("condition.notify_all")  # CPython's notify_all calls notify, which counts the woken
        return notify_all(self)

    def counted_wait(self, timeout=None):
        result = wait(self, timeout)
        if timeout is not None and not result:
            count("timer.wait_expired")  # a timed wait that ran out: a timer wake-up
        return result

    threading.Condition.notify, threading.Condition.notify_all = counted_notify, counted_notify_all
    threading.Condition.wait = counted_wait
    sleep = time.sleep

    def counted_sleep(seconds):
        if seconds > 0:
            count("timer.sleep")
        return sleep(seconds)

    time.sleep = counted_sleep


def _patch_executor() -> None:
    from concurrent.futures import ThreadPoolExecutor

    _patch(ThreadPoolExecutor, "submit", "executor.submit")


# ---- pykka ---------------------------------------------------------------------------------

def _current_actor_urn():
    """The urn of the pykka actor whose loop runs this thread, if any (its Thread's target)."""
    thread = threading._active.get(threading.get_ident())  # noqa: SLF001 - see _thread_counts
    target = getattr(thread, "_target", None)
    return getattr(getattr(target, "__self__", None), "actor_urn", None)


def _patch_pykka() -> None:
    try:
        import pykka
    except ImportError:
        return
    tell, ask = pykka.ActorRef.tell, pykka.ActorRef.ask

    def counted_tell(self, message):
        kind = "pykka.tell_self" if _current_actor_urn() == self.actor_urn else "pykka.tell"
        count(kind)
        count(f"msg:tell {self.actor_class.__name__}.{type(message).__name__}")
        return tell(self, message)

    def counted_ask(self, message, **kwargs):
        count("pykka.ask")
        count(f"msg:ask {self.actor_class.__name__}.{type(message).__name__}")
        return ask(self, message, **kwargs)

    pykka.ActorRef.tell, pykka.ActorRef.ask = counted_tell, counted_ask


# ---- event loops ---------------------------------------------------------------------------

class _TimerCallback:
    """A loop timer's callback that counts when it fires (a cancelled timer never does)."""

    __slots__ = ("callback",)

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, *args):
        count("timer.loop_fired")
        return self.callback(*args)


def _patch_loop_class(loop_class, timer_methods: tuple[str, ...]) -> None:
    import asyncio

    threadsafe = loop_class.call_soon_threadsafe

    def counted_threadsafe(self, callback, *args, **kwargs):
        same = asyncio._get_running_loop() is self  # noqa: SLF001 - C-level, cheap
        count("loop.call_soon_threadsafe_same_thread" if same else "loop.call_soon_threadsafe")
        return threadsafe(self, callback, *args, **kwargs)

    loop_class.call_soon_threadsafe = counted_threadsafe
    for name in timer_methods:
        _wrap_timer_method(loop_class, name)


def _wrap_timer_method(loop_class, name: str) -> None:
    original = getattr(loop_class, name)

    def schedule(self, when, callback, *args, **kwargs):
        if not isinstance(callback, _TimerCallback):  # call_later may go through call_at: wrap once
            callback = _TimerCallback(callback)
        return original(self, when, callback, *args, **kwargs)

    setattr(loop_class, name, schedule)


def _patch_event_loops() -> None:
    import asyncio

    # asyncio's call_later calls call_at: wrapping call_at alone sees every timer.
    _patch_loop_class(asyncio.BaseEventLoop, ("call_at",))
    try:
        import uvloop
    except ImportError:
        return
    # uvloop.Loop is a Python subclass of its Cython loop: its attributes can be replaced,
    # and a loop from uvloop.new_event_loop(), its policy or uvloop.run() is an instance.
    _patch_loop_class(uvloop.Loop, ("call_at", "call_later"))


# ---- JSON ----------------------------------------------------------------------------------

def _patch_json() -> None:
    # json.dumps/loads go through these methods (the default encoder's or a new one's).
    _patch(json.JSONEncoder, "encode", "json.encode")
    _patch(json.JSONDecoder, "decode", "json.decode")
    _patch(json, "dumps", "json.dumps")
    try:
        import orjson
    except ImportError:
        return
    _patch(orjson, "dumps", "orjson.dumps")
    _patch(orjson, "loads", "orjson.loads")


# ---- dump ----------------------------------------------------------------------------------

def _dump(signum, frame) -> None:
    """SIGUSR1: write every thread's counts to $BENCH_TRACE_DIR/<pid>.json (atomically)."""
    # No lock here: the handler may have interrupted this very thread while it held one.
    # Copying a list or a dict is one step under the GIL.
    threads = [{"name": name, "counts": dict(counts)} for name, counts in list(_threads)]
    data = {"pid": os.getpid(), "argv": sys.argv, "time": time.time(), "threads": threads}
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as out:
        out.write(_ENCODE(json.JSONEncoder(), data))
    os.replace(path + ".tmp", path)


def install() -> None:
    """Patch everything and listen for SIGUSR1 (main thread, at interpreter startup)."""
    _patch_threading()
    _patch_executor()
    _patch_pykka()
    _patch_event_loops()
    _patch_json()
    signal.signal(signal.SIGUSR1, _dump)


if _DIR:
    install()
