"""Profile one send path with pyinstrument and print its heaviest frames.

``python -m bench.profile send|queue|worker|pickup|routing [count]``: the figures quoted in
bench/RESULTS.md ("Profiles") come from here. Each path runs as its benchmark does (SQLite,
a sink process for the network paths).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pyinstrument import Profiler

from bench.messages import RECIPIENT, SENDER, SUBJECT, TEXT, recipient
from bench.setup import sqlite_app
from bench.sink import Sink


def _top_frames(profiler: Profiler, limit: int) -> list[tuple[float, str]]:
    """Own-code frames by total time (own time of library frames folded into them)."""
    session = profiler.last_session
    root = session.root_frame()
    totals: dict[str, float] = {}

    def walk(frame, seen: frozenset[str]) -> None:
        name = f"{frame.function} ({Path(frame.file_path or '?').name}:{frame.line_no})"
        if name not in seen:  # recursion counts once
            totals[name] = totals.get(name, 0.0) + frame.time
            seen = seen | {name}
        for child in frame.children:
            walk(child, seen)

    if root is not None:
        walk(root, frozenset())
    whole = root.time if root is not None else 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [(seconds / whole, name) for name, seconds in ranked[:limit]]


def _send(folder: Path, count: int) -> Profiler:
    from bench.bench_send import prepare_shop
    from smtpsite import send_mail
    from smtpsite.extensions import db

    sink = Sink(prefer_postfix=True)
    try:
        with sqlite_app(folder) as app, app.app_context():
            prepare_shop(sink)
            profiler = Profiler(interval=0.0005)
            with profiler:
                for n in range(count):
                    send_mail("shop", to=[recipient(n)], subject=SUBJECT, text=TEXT, sender=SENDER)
                    db.session.remove()
    finally:
        sink.stop()
    return profiler


def _queue(folder: Path, count: int) -> Profiler:
    from smtpsite import send_mail
    from smtpsite.extensions import db
    from smtpsite.sites import create_site

    with sqlite_app(folder) as app, app.app_context():
        create_site("shop", "Shop")
        db.session.commit()
        profiler = Profiler(interval=0.0005)
        with profiler:
            for n in range(count):
                send_mail("shop", to=[recipient(n)], subject=SUBJECT, text=TEXT, sender=SENDER,
                          queue=True)
                db.session.remove()
    return profiler


def _worker(folder: Path, count: int) -> Profiler:
    from bench.bench_worker import fill_queue, prepare_site
    from smtpsite.worker import Worker

    sink = Sink(prefer_postfix=True)
    try:
        with sqlite_app(folder) as app, app.app_context():
            prepare_site([sink.server_name])
            fill_queue(count)
            profiler = Profiler(interval=0.0005)
            with profiler:
                Worker(once=True).run()
    finally:
        sink.stop()
    return profiler


def _pickup(folder: Path, count: int) -> Profiler:
    from bench.messages import raw_message
    from plugins.pickup import PickupDelivery
    from smtpsite.delivery import OutgoingMessage, PluginContext, ServerAddress

    out = folder / "pickup"
    out.mkdir()
    context = PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (folder,)})
    messages = [OutgoingMessage(f"<p-{n}@example.com>", SENDER, (RECIPIENT,), raw_message(n))
                for n in range(count)]
    options = PickupDelivery.clean_options({"directory": str(out)}, context)
    plugin = PickupDelivery(ServerAddress("pickup", "localhost", 25), options, context)
    profiler = Profiler(interval=0.0005)
    with profiler:
        plugin.send_messages(messages)
    return profiler


def _routing(folder: Path, count: int) -> Profiler:
    from bench.bench_routing import fill
    from smtpsite.routing import chain_for
    from smtpsite.sites import find_site

    with sqlite_app(folder) as app, app.app_context():
        fill(1000, 10000)
        site = find_site("site7")
        chain_for(site, SENDER)
        profiler = Profiler(interval=0.0001)
        with profiler:
            for _ in range(count):
                chain_for(site, SENDER)
    return profiler


PATHS = {"send": (_send, 1000), "queue": (_queue, 1000), "worker": (_worker, 5000),
         "pickup": (_pickup, 1000), "routing": (_routing, 200)}


def main(argv: list[str] | None = None) -> int:
    """Profile the named path and print its top frames (share of the whole run)."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("count", nargs="?", type=int)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tree", action="store_true", help="also print pyinstrument's tree")
    args = parser.parse_args(argv)
    run, default = PATHS[args.path]
    with tempfile.TemporaryDirectory(prefix="smtpsite-profile-") as tmp:
        profiler = run(Path(tmp), args.count or default)
    if args.tree:
        print(profiler.output_text(unicode=True, show_all=False))
    for share, name in _top_frames(profiler, args.top):
        print(f"{share:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
