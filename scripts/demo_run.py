"""Runs the demo's dataflow so that it reads well: the nodes' own lines as they come, dora's bookkeeping in a
log file, and, when the run fails, the failed node's sentence once with the next step that fits its cause.

Run as dora 1.1 prints it, a failed start says the node's sentence three times (the node's line, the
daemon's copy of its stderr, the closing summary) among a hundred lines of the daemon's own. With
`--log-format json` each line of the run says which node it comes from, and the closing summary names
the node that failed first, with the end of its stderr.

    scripts/demo_run.py DATAFLOW LOG [--random-weights]    (demo.sh runs it; the exit status is dora's)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dora_sam2.loading import NOT_CACHED_OFFLINE

LAST_WORDS = ("ERROR ", "CRITICAL ")  # how a node's fatal sentence starts (logging's level name first)
TRACEBACK = "Traceback (most recent call last):"
FAILED_NODE = re.compile(r"Node `(?P<node>[^`]+)` failed: (?P<how>[^\n]*?)(?: with stderr output:\n-+\n"
                         r"(?P<stderr>.*?)\n-+\n|\n|$)", re.S)
SETTING = re.compile(r"\b([A-Z][A-Z0-9_]+)=")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SHOWN_VALUE = 60  # characters of a setting's value the advice repeats
OFFLINE = 3  # the exit status when the model could not be had for want of a network: demo.sh then runs --world


def node_line(raw: str) -> tuple[str, str] | None:
    """(node, text) for a line a node printed, from dora's JSON log; None for the daemon's own lines."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("level") != "stdout" or not entry.get("node_id"):
        return None
    return str(entry["node_id"]), str(entry.get("message", ""))


@dataclass
class Screen:
    """Which of the nodes' lines to show as they come. A node's ERROR lines are held back (a failed node's
    are said once, at the end), and so is a traceback with all its node prints after it."""

    held: list[tuple[str, str]] = field(default_factory=list)
    dying: set[str] = field(default_factory=set)

    def show(self, node: str, text: str) -> str | None:
        if text.startswith(TRACEBACK):
            self.dying.add(node)
        if node in self.dying:
            return None
        if text.startswith(LAST_WORDS):
            self.held.append((node, text))
            return None
        return f"{node}: {text}"


@dataclass
class Failure:
    node: str | None  # None: dora itself failed (a dataflow it cannot start, a daemon that died)
    words: list[str]  # the node's ERROR lines without their prefix, else the last line it wrote
    sentence: bool  # the words are the node's own sentence, not the end of a crash


def failure(output: str) -> Failure | None:
    """What dora's closing summary says failed first, from the whole output of `dora run`."""
    summary = ANSI.sub("", output).rpartition("[ERROR]")[2]
    if not summary:
        return None
    found = FAILED_NODE.search(summary)
    if found is None:
        lines = [line.strip() for line in summary.split("\nLocation:")[0].splitlines() if line.strip()]
        return Failure(None, lines, False)
    written = [line.strip() for line in (found["stderr"] or "").splitlines() if line.strip()]
    sentences = [_without_prefix(line) for line in written if line.startswith(LAST_WORDS)]
    return Failure(found["node"], sentences or written[-1:] or [found["how"].strip()], bool(sentences))


def _without_prefix(line: str) -> str:
    """'ERROR dora-sam2: MODE=...' -> 'MODE=...': the node's name is said beside it."""
    return re.sub(r"^(ERROR|CRITICAL) [^:\s]+: ", "", line)


def next_step(failed: Failure, random_weights: bool, environ) -> str:
    """The step that fits the cause: weights to get, a setting to fix, or the log of a crash."""
    words = " ".join(failed.words)
    if failed.node is None:
        return "dora could not run the dataflow as written: its whole log below says more."
    if NOT_CACHED_OFFLINE in words:
        return ("no weights here and no network: `./demo.sh --world` runs the offline demo on a model trained "
                "here on a synthetic world (scripts/make-fixture.sh makes it), `./demo.sh --random-weights` the "
                "plumbing on a random-weight model (its masks are noise), or set MODEL to a directory holding a "
                "checkpoint.")
    named = [name for name in dict.fromkeys(SETTING.findall(words)) if name in environ]
    if random_weights and "MODEL" in named:
        return (f"the random-weight model in {environ['MODEL']} cannot be read: delete that directory, then "
                "./demo.sh --random-weights makes it anew.")
    if named:
        values = ", ".join(f"{name}={_shown(environ[name])}" for name in named)
        step = (f"fix {values} as the line says (or `unset {' '.join(named)}` for the demo's default), then run "
                "./demo.sh again")
        return step + ("; ./demo.sh --random-weights needs no weights." if "MODEL" in named else ".")
    if failed.sentence:
        return "do what the line says, then run ./demo.sh again."
    return "that is a crash, not a setting: the whole log below has the rest (an issue with it helps)."


def _shown(value: str) -> str:
    return value if len(value) <= SHOWN_VALUE else value[:SHOWN_VALUE] + "..."


def report(failed: Failure | None, status: int, log: Path, random_weights: bool) -> list[str]:
    """The lines a failed run ends with."""
    if failed is None:
        return [f"demo: dora stopped with status {status}; its whole log: {log}"]
    who = f"{failed.node} failed" if failed.node else "dora failed"
    lines = [f"demo: {who}: {failed.words[0] if failed.words else '(no message)'}"]
    lines += [f"  {words}" for words in failed.words[1:]]
    lines.append(f"demo: next: {next_step(failed, random_weights, os.environ)}")
    lines.append(f"demo: dora's whole log: {log}")
    return lines


def run(dataflow: str, log: Path, random_weights: bool) -> int:
    command = ["dora", "run", "--log-format", "json", "--log-level", "stdout", dataflow]
    screen, output = Screen(), []
    with open(log, "w") as written, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, errors="replace") as dora:
        # Ctrl-C reaches dora too, which stops the dataflow cleanly: keep reading until it is done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for raw in dora.stdout:
            written.write(raw)
            output.append(raw)
            line = node_line(raw)
            shown = screen.show(*line) if line else None
            if shown is not None:
                print(shown, flush=True)
    failed = failure("".join(output)) if dora.returncode else None
    for node, text in screen.held:  # another node's error lines: said, once, before the failure
        if failed is None or node != failed.node:
            print(f"{node}: {text}", flush=True)
    if dora.returncode:
        print("\n".join(report(failed, dora.returncode, log, random_weights)), file=sys.stderr)
        if failed is not None and NOT_CACHED_OFFLINE in " ".join(failed.words):
            return OFFLINE
    return dora.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataflow")
    parser.add_argument("log", type=Path)
    parser.add_argument("--random-weights", action="store_true", help="MODEL is the demo's random-weight model")
    args = parser.parse_args()
    sys.exit(run(args.dataflow, args.log, args.random_weights))


if __name__ == "__main__":
    main()
