"""The msh engine: finding the binary, calling it, following its events, reading its errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional

#: How long an interrupted engine gets to put its running trials back before it is killed.
STOP_GRACE_SECONDS = 30.0

BUILD_HINT = (
    "build it from the repository root with `cargo build --release -p msh` "
    "(then target/release/msh is found), put `msh` on PATH, or set MSH_BIN to its path"
)


class MshError(RuntimeError):
    """An error of the msh engine, with the file, line and column at fault where it names them."""

    def __init__(
        self,
        message: str,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        exit_code: Optional[int] = None,
        stderr: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.exit_code = exit_code
        self.stderr = stderr


class Interrupted(MshError, KeyboardInterrupt):
    """The run was stopped (Ctrl-C); running trials went back to the queue, so the same
    call resumes it."""


def _repository_binaries() -> Iterable[Path]:
    """`target/release/msh` of the repository this package sits in, or that the current
    directory is in, and of `CARGO_TARGET_DIR`."""
    if os.environ.get("CARGO_TARGET_DIR"):
        yield Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "msh"
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for directory in [start, *start.parents]:
            if (directory / "host" / "Cargo.toml").is_file():
                yield directory / "target" / "release" / "msh"
                break


def find_engine() -> str:
    """The `msh` binary: `MSH_BIN`, else `msh` on PATH, else the repository's release build."""
    named = os.environ.get("MSH_BIN")
    if named:
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            raise MshError(f"MSH_BIN={named} is not an executable file; {BUILD_HINT}")
        return named
    on_path = shutil.which("msh")
    if on_path:
        return on_path
    for candidate in _repository_binaries():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MshError(f"cannot find the msh engine; {BUILD_HINT}")


_LOCATED = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<column>\d+): ")


_ERROR_LINE = re.compile(r"^(?:msh: )?error: ", re.M)


def error_from(stderr: str, exit_code: int, args: list) -> MshError:
    """The engine's error: the text after its last `msh: error: ` (causes included),
    located where it starts with FILE:LINE:COLUMN."""
    starts = list(_ERROR_LINE.finditer(stderr))
    message = stderr[starts[-1].end():].strip() if starts else stderr.strip()
    if not message:
        message = f"`msh {' '.join(map(str, args))}` ended with exit code {exit_code} and printed nothing"
    located = _LOCATED.match(message)
    if located:
        return MshError(
            message,
            file=located["file"],
            line=int(located["line"]),
            column=int(located["column"]),
            exit_code=exit_code,
            stderr=stderr,
        )
    return MshError(message, exit_code=exit_code, stderr=stderr)


def _environment(store: Optional[str]) -> dict:
    env = dict(os.environ)
    if store:
        # The URL may hold a password: by the environment, never the command line.
        env["MSH_STORE"] = store
    return env


def call(args: list, store: Optional[str] = None) -> str:
    """Runs `msh ARGS` to its end; returns its stdout, raises `MshError` on failure."""
    args = [str(a) for a in args]
    done = subprocess.run(
        [find_engine(), *args], capture_output=True, text=True, env=_environment(store), stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise error_from(done.stderr, done.returncode, args)
    return done.stdout


def call_json(args: list, store: Optional[str] = None):
    return json.loads(call(args, store))


def follow(args: list, on_event: Callable[[dict], None], store: Optional[str] = None) -> None:
    """Runs `msh ARGS --events json`, handing each event (a dict) to `on_event` as it comes.

    Ctrl-C (KeyboardInterrupt) stops the engine the way its own Ctrl-C does: running
    trials go back to the queue and the run stays resumable; then `Interrupted` is raised.
    An engine that fails or is killed raises `MshError`.
    """
    args = [str(a) for a in args] + ["--events", "json"]
    # A session of its own: a terminal's Ctrl-C reaches only this process, which passes
    # on exactly one SIGINT (a second one makes the engine quit at once).
    process = subprocess.Popen(
        [find_engine(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_environment(store),
        start_new_session=True,
    )
    stderr: list = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    try:
        for line in process.stdout:
            line = line.strip()
            if line.startswith("{"):
                on_event(json.loads(line))
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        raise Interrupted("interrupted: running trials went back to the queue; run again to resume") from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    reader.join(timeout=5)
    text = "".join(stderr)
    if code == 130:
        raise Interrupted("the run was interrupted; run again to resume", exit_code=code, stderr=text)
    if code < 0:
        raise MshError(f"the msh engine was killed by signal {-code}", exit_code=code, stderr=text)
    if code != 0:
        raise error_from(text, code, args)
