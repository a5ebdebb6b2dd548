"""The pickup plugin writing messages, against a plain temp-file + fsync + rename loop."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from bench.harness import Row, alternate, rate
from bench.messages import RECIPIENT, SENDER, raw_message
from plugins.pickup import PickupDelivery
from smtpsite.delivery import OutgoingMessage, PluginContext, ServerAddress


def _plain_loop(folder: Path, payloads: list[bytes]) -> None:
    for data in payloads:
        name = uuid.uuid4().hex
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, folder / f"{name}.eml")


def run(folder: Path, count: int, rounds: int) -> list[Row]:
    """Messages per second for the plugin and the baseline loop."""
    out = folder / "pickup"
    context = PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (folder,)})
    messages = [OutgoingMessage(f"<bench-{n}@example.com>", SENDER, (RECIPIENT,), raw_message(n))
                for n in range(count)]
    header = f"X-Sender: {SENDER}\r\nX-Receiver: {RECIPIENT}\r\n".encode()
    payloads = [header + m.data for m in messages]

    def fresh() -> Path:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return out

    def plugin_run() -> float:
        fresh()
        options = PickupDelivery.clean_options({"directory": str(out)}, context)
        plugin = PickupDelivery(ServerAddress("pickup", "localhost", 25), options, context)
        return rate(count, lambda: plugin.send_messages(messages))

    def baseline_run() -> float:
        target = fresh()
        return rate(count, lambda: _plain_loop(target, payloads))

    medians = alternate({"plugin": plugin_run, "baseline": baseline_run}, rounds)
    shutil.rmtree(out, ignore_errors=True)
    return [Row(f"pickup plugin writing {count:,} messages", medians["plugin"], "msg/s",
                "temp file + fsync + rename loop", medians["baseline"], "≥ 0.9×",
                medians["plugin"] >= 0.9 * medians["baseline"])]
