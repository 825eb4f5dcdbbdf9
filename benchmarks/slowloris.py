"""The click page under a slowloris: how many page loads of 30 its operator gets.

    .venv/bin/python benchmarks/slowloris.py                  # this checkout's click server
    .venv/bin/python benchmarks/slowloris.py --before 84a75cc # and the server as of that commit, for the row before

The click server runs in a process of its own with its default limits, a frame shown every 0.1 s. A
slowloris (tests/support/slowloris.py) holds 200 connections to it, one byte each every 2 s, and
reopens those the server closed each round (the classic tool), or the moment it sees one closed (eager:
a flood of new connections on top). Meanwhile the operator loads the page 30 times, one load a second:
the page (GET /?token=...), a frame from the event stream, a click (POST /points). A load succeeds if
all three do, each within 10 s. Bounded: every wait has a limit, and the server process ends by itself.

Prints and writes benchmarks/results/slowloris.json and slowloris.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, save  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from support.dataflows import free_port  # noqa: E402
from support.slowloris import Slowloris  # noqa: E402

TOKEN = "benchmark-token-0123456789"
LOADS, CONNECTIONS, EVERY = 30, 200, 2.0
WAIT = 10.0  # seconds the operator's client waits on each request


def serve(port: int, seconds: float) -> None:
    """The click server with its default limits, frames shown, until `seconds` pass (run in a child)."""
    import numpy as np

    import dora_sam2.click as click
    from dora_sam2.domain import Frame

    view = click.LiveView()
    server = click.ClickServer(view, "127.0.0.1", port, TOKEN).start()
    print(click.__file__, flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        view.show_frame(Frame("image", np.full((48, 64, 3), 100, np.uint8), None, "bgr8"))
        time.sleep(0.1)
    server.stop()


def page_load(port: int) -> str | None:
    """One load of the operator's page: None if it worked, else what failed."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        connection.request("GET", f"/?token={TOKEN}")
        if connection.getresponse().status != 200:
            return "page refused"
        connection.close()
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        stream.request("GET", f"/events?token={TOKEN}")
        response = stream.getresponse()
        if response.status != 200:
            return "stream refused"
        if not any(response.fp.readline().startswith(b"data: ") for _ in range(100)):
            return "no frame"
        stream.close()
        origin = f"http://127.0.0.1:{port}"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        connection.request("POST", "/points", json.dumps({"object": 0, "points": [[10, 20, 1]]}),
                           {"Origin": origin, "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        if connection.getresponse().status != 204:
            return "click refused"
        connection.close()
    except OSError as error:  # refused, reset, or no answer within WAIT
        return type(error).__name__
    return None


def measure(source: Path | None, eager: bool) -> dict:
    """30 page loads under the slowloris, against the click server in `source` (None: this checkout)."""
    port = free_port()
    env = {**os.environ}
    if source:
        env["PYTHONPATH"] = str(source)
    seconds = 10 + LOADS * (3 * WAIT + 1)  # the server ends by itself, even if this process dies
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(seconds)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        served_from = server.stdout.readline().strip()
        with Slowloris(port, CONNECTIONS, EVERY, eager, seconds) as slowloris:
            time.sleep(3 * EVERY)  # every slot taken, and the server's every answer to it seen
            failures, times = [], []
            for _ in range(LOADS):
                started = time.perf_counter()
                failures.append(page_load(port))
                times.append(time.perf_counter() - started)
                time.sleep(1)
            held, opened, answered = slowloris.holding, slowloris.opened, slowloris.answered
    finally:
        server.kill()
        server.wait()
    ok = [t for t, failure in zip(times, failures) if failure is None]
    return {"server": served_from, "loads": LOADS, "succeeded": len(ok),
            "failures": {f: failures.count(f) for f in set(failures) if f},
            "median_load_s": sorted(ok)[len(ok) // 2] if ok else None, "slowloris_holding_at_end": held,
            "slowloris_connections_opened": opened, "slowloris_requests_answered": answered}


def old_source(revision: str, into: Path) -> Path:
    """src/ of the package as of `revision` (git archive: nothing in this checkout changes)."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def markdown(r: dict) -> str:
    lines = [f"The click page under a {CONNECTIONS}-connection slowloris ({r['machine']})", "",
             "| server | slowloris | page loads that worked | median load | slowloris connections opened |",
             "|---|---|---|---|---|"]
    for name, m in r["runs"].items():
        median = f"{m['median_load_s'] * 1e3:.0f} ms" if m["median_load_s"] is not None else "-"
        server, mode = name.split(", ")
        lines.append(f"| {server} | {mode} | {m['succeeded']} of {m['loads']} | {median} | "
                     f"{m['slowloris_connections_opened']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="also measure the click server as of this git revision")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), float(args.serve[1]))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {f"before ({args.before})": old_source(args.before, Path(tmp))} if args.before else {}
        for server, source in {**servers, "this checkout": None}.items():
            for mode, eager in (("reopens each round", False), ("reopens at once", True)):
                runs[f"{server}, {mode}"] = measure(source, eager)
    save("slowloris", {"machine": machine(), "connections": CONNECTIONS, "byte_every_s": EVERY, "runs": runs},
         markdown({"machine": machine(), "runs": runs}))


if __name__ == "__main__":
    main()
