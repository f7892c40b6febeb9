"""The supervisor of one container: `python -I -S shim.py <container dir>`.

Standard library only and started by file path (no package imports), so it stays small.
It starts `<runtime> run -d` (runc or crun: neither keeps the exit code of a detached
container), becomes the container's parent (child subreaper), writes its
stdout/stderr to the CRI log file, serves attachments on `attach.sock`, and records the
exit code and times in files, so all of it survives a restart of the node agent.

The process the agent starts waits until the container runs, prints an error and exits
1 if it could not be started, or exits 0 leaving the supervisor running on its own.

Files in the container dir: shim.json (input: runtime, runtime_root, id, bundle,
log_path, tty, stdin, stdin_once), shim.pid, started.json {pid, started_at},
exit.json {exit_code, finished_at, oom_killed}, runc.log (the runtime's JSON log,
whichever runtime), attach.sock.

It closes every descriptor it inherited beyond stdio first: the daemon half lives as long
as the container, and a descriptor it kept (uvloop's subprocess support ignores
close_fds) would hold a pipe of the agent open, so the agent would wait for its end
forever.

Attach protocol, frames of `type (1 byte) | length (4 bytes, big endian) | payload`:
to the shim 0 stdin data, 1 close stdin, 3 resize (width, height as two u16);
from the shim 1 stdout, 2 stderr, 4 exit (exit code as i32), then the shim hangs up.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
from typing import Any

FRAME_STDIN, FRAME_CLOSE_STDIN, FRAME_STDOUT, FRAME_STDERR, FRAME_RESIZE, FRAME_EXIT = (
    0, 1, 1, 2, 3, 4)
HEADER = struct.Struct("!BI")
MAX_LINE = 16 * 1024  # longer lines are split into P records, as containerd does
MAX_CLIENT_BACKLOG = 1 << 20
DRAIN_SECONDS = 1.0
PR_SET_CHILD_SUBREAPER = 36


def log_time(time_ns: int) -> bytes:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return (stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z").encode()


def write_json(path: str, data: dict[str, object]) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(data, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class LogWriter:
    """Output of the container into CRI log records, one partial-line buffer per stream."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: int | None = None
        self.pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.reopen()

    def reopen(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _record(self, stream: str, content: bytes, partial: bool) -> None:
        if self.file is not None:
            line = (log_time(time.time_ns()) + b" " + stream.encode()
                    + (b" P " if partial else b" F ") + content + b"\n")
            os.write(self.file, line)

    def write(self, stream: str, data: bytes) -> None:
        buffer = self.pending[stream] + data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self._record(stream, line, False)
        while len(rest) >= MAX_LINE:
            self._record(stream, rest[:MAX_LINE], True)
            rest = rest[MAX_LINE:]
        self.pending[stream] = rest

    def flush(self) -> None:
        for stream, rest in self.pending.items():
            if rest:
                self._record(stream, rest, True)
            self.pending[stream] = b""


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""


def memory_cgroup_dir(pid: int) -> str:
    """The container's memory cgroup directory (cgroup v1 memory, else the v2 unified)."""
    v1_mount = v2_mount = ""
    with open("/proc/self/mountinfo") as file:
        for line in file:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(tail) >= 3 and tail[0] == "cgroup" and "memory" in tail[2].split(","):
                v1_mount = fields[4]
            elif tail and tail[0] == "cgroup2" and not v2_mount:
                v2_mount = fields[4]
    with open(f"/proc/{pid}/cgroup") as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if v1_mount and "memory" in controllers.split(","):
                return v1_mount + path
            if not v1_mount and controllers == "" and v2_mount:
                return v2_mount + path
    return ""


def oom_kills(cgroup_dir: str) -> int:
    for name in ("memory.oom_control", "memory.events"):
        try:
            with open(os.path.join(cgroup_dir, name)) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def runtime_error(log_path: str) -> str:
    """The last error the runtime logged (its --log file, JSON lines: runc and crun)."""
    message = ""
    with contextlib.suppress(OSError), open(log_path) as file:
        for line in file:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return message


class Shim:
    def __init__(self, directory: str, config: dict[str, object]) -> None:
        self.directory = directory
        self.config = config
        self.tty = bool(config.get("tty"))
        self.stdin_open = bool(config.get("stdin"))
        self.stdin_once = bool(config.get("stdin_once"))
        self.log = LogWriter(str(config.get("log_path") or ""))
        self.outputs: dict[int, str] = {}  # fd -> stream name
        self.stdin_fd: int | None = None
        self.master: int | None = None
        self.clients: list[Client] = []
        self.reaped: dict[int, int] = {}
        self.reopen_requested = False

    def runc_argv(self, *args: str) -> list[str]:
        # Absolute: crun resolves relative paths against the bundle, runc the cwd.
        return [str(self.config["runtime"]), "--root", str(self.config["runtime_root"]),
                "--log", os.path.abspath("runc.log"), "--log-format", "json", *args]

    def start(self) -> int:
        """Start the container; returns its pid or raises RuntimeError."""
        devnull = os.open(os.devnull, os.O_RDWR)
        args = ["run", "-d", "--pid-file", os.path.abspath("container.pid"), "--bundle",
                str(self.config["bundle"])]
        console = None
        if self.tty:
            with contextlib.suppress(FileNotFoundError):
                os.unlink("console.sock")
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            console.bind("console.sock")
            console.listen(1)
            args += ["--console-socket", "console.sock"]
            stdio = [devnull, devnull, devnull]
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            if self.stdin_open:
                in_r, in_w = os.pipe()
                self.stdin_fd = in_w
            else:
                in_r = devnull
            self.outputs = {out_r: "stdout", err_r: "stderr"}
            stdio = [in_r, out_w, err_w]
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        runc = os.posix_spawnp(self.runc_argv(*args, str(self.config["id"]))[0],
                               self.runc_argv(*args, str(self.config["id"])),
                               dict(os.environ), file_actions=actions)
        if not self.tty:
            for fd in stdio:
                if fd != devnull:
                    os.close(fd)
        status = None
        while status is None:
            if console is not None and self.master is None:
                ready, _, _ = select.select([console], [], [], 0.01)
                if ready:
                    connection, _ = console.accept()
                    _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
                    connection.close()
                    if fds:
                        self.master = fds[0]
                        self.outputs = {self.master: "stdout"}
                        if self.stdin_open:
                            self.stdin_fd = self.master
            else:
                time.sleep(0.002)
            pid, raw = os.waitpid(runc, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
        if console is not None:
            console.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink("console.sock")
        os.close(devnull)
        if status != 0:
            name = os.path.basename(str(self.config["runtime"]))
            raise RuntimeError(runtime_error("runc.log") or f"{name} run exited with {status}")
        with open("container.pid") as file:
            return int(file.read().strip())

    def reap(self) -> None:
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            code = os.waitstatus_to_exitcode(raw)
            self.reaped[pid] = 128 - code if code < 0 else code  # killed by signal N: 128+N

    def close_stdin(self) -> None:
        if self.stdin_fd is None:
            return
        if self.stdin_fd == self.master:
            with contextlib.suppress(OSError):
                os.write(self.master, b"\x04")  # EOF for the terminal's reader
        else:
            os.close(self.stdin_fd)
        self.stdin_fd = None

    def broadcast(self, kind: int, payload: bytes) -> None:
        frame = HEADER.pack(kind, len(payload)) + payload
        for client in list(self.clients):
            client.outbox += frame
            if len(client.outbox) > MAX_CLIENT_BACKLOG:
                self.drop(client)  # too slow a reader must not stall the container

    def drop(self, client: Client) -> None:
        with contextlib.suppress(ValueError):
            self.clients.remove(client)
        client.sock.close()
        if self.stdin_once:
            self.close_stdin()

    def handle_client_input(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbox += data
        while len(client.inbox) >= HEADER.size:
            kind, length = HEADER.unpack_from(client.inbox)
            if len(client.inbox) < HEADER.size + length:
                break
            payload = client.inbox[HEADER.size:HEADER.size + length]
            client.inbox = client.inbox[HEADER.size + length:]
            if kind == FRAME_STDIN and self.stdin_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(self.stdin_fd, payload)
            elif kind == FRAME_CLOSE_STDIN:
                self.close_stdin()
            elif kind == FRAME_RESIZE and self.master is not None and length == 4:
                width, height = struct.unpack("!HH", payload)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", height, width, 0, 0))

    def read_output(self, fd: int) -> bool:
        """Copy what is there; False at end of stream."""
        try:
            data = os.read(fd, 65536)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EINTR):
                return True
            data = b""  # EIO: the terminal's other side closed
        if not data:
            del self.outputs[fd]
            if fd != self.master:
                os.close(fd)
            return False
        stream = self.outputs[fd]
        self.log.write(stream, data)
        self.broadcast(FRAME_STDOUT if stream == "stdout" else FRAME_STDERR, data)
        return True

    def serve(self, pid: int, wakeup: int) -> int:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("attach.sock")
        listener.bind("attach.sock")
        listener.listen(8)
        listener.setblocking(False)
        exit_code: int | None = None
        drain_until = 0.0
        while True:
            self.reap()
            if exit_code is None and pid in self.reaped:
                exit_code = self.reaped[pid]
                drain_until = time.monotonic() + DRAIN_SECONDS
            if exit_code is not None and (not self.outputs or time.monotonic() > drain_until):
                break
            if self.reopen_requested:
                self.reopen_requested = False
                self.log.flush()
                self.log.reopen()
            readers: list[Any] = [wakeup, listener, *self.outputs,
                                     *(c.sock for c in self.clients)]
            writers = [c.sock for c in self.clients if c.outbox]
            timeout = 0.1 if exit_code is not None else 5.0
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for item in readable:
                if item == wakeup:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup, 512)
                elif item is listener:
                    with contextlib.suppress(BlockingIOError):
                        sock, _ = listener.accept()
                        sock.setblocking(False)
                        self.clients.append(Client(sock))
                elif isinstance(item, int):
                    if item in self.outputs:
                        self.read_output(item)
                else:
                    client = next((c for c in self.clients if c.sock is item), None)
                    if client is not None:
                        self.handle_client_input(client)
            for item in writable:
                client = next((c for c in self.clients if c.sock is item), None)
                if client is not None:
                    try:
                        sent = client.sock.send(client.outbox)
                        client.outbox = client.outbox[sent:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self.drop(client)
        self.log.flush()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink("attach.sock")
        assert exit_code is not None
        return exit_code

    def finish_clients(self, exit_code: int) -> None:
        self.broadcast(FRAME_EXIT, struct.pack("!i", exit_code))
        for client in list(self.clients):
            client.sock.setblocking(True)
            client.sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                client.sock.sendall(client.outbox)
            client.sock.close()
        self.clients.clear()


def supervise(directory: str, report: int) -> None:
    """The daemon side: runs until the container exits."""
    with open("shim.json") as file:
        config = json.load(file)
    shim = Shim(directory, config)
    with open("shim.pid", "w") as file:
        file.write(str(os.getpid()))
    try:
        pid = shim.start()
        started_ns = time.time_ns()
    except Exception as error:
        os.write(report, f"error: {error}".encode())
        os.close(report)
        raise SystemExit(1) from None
    cgroup_dir = ""
    with contextlib.suppress(OSError, ValueError):
        cgroup_dir = memory_cgroup_dir(pid)
    oom_before = oom_kills(cgroup_dir) if cgroup_dir else 0
    write_json("started.json", {"pid": pid, "started_at": started_ns,
                                "memory_cgroup": cgroup_dir})
    os.write(report, b"ok")
    os.close(report)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)

    def on_reopen(_signum: int, _frame: object) -> None:
        shim.reopen_requested = True

    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    signal.signal(signal.SIGUSR1, on_reopen)
    exit_code = shim.serve(pid, wake_r)
    finished_ns = time.time_ns()
    oom = bool(cgroup_dir) and oom_kills(cgroup_dir) > oom_before
    write_json("exit.json", {"exit_code": exit_code, "finished_at": finished_ns,
                             "oom_killed": oom})
    shim.finish_clients(exit_code)


def main() -> None:
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    directory = os.path.abspath(sys.argv[1])
    os.chdir(directory)  # runc gets relative socket paths: unix paths are short
    report_r, report_w = os.pipe()
    if os.fork():
        os.close(report_w)
        message = b""
        while chunk := os.read(report_r, 4096):
            message += chunk
        if message == b"ok":
            raise SystemExit(0)
        sys.stderr.write(message.decode(errors="replace").removeprefix("error: ") + "\n")
        raise SystemExit(1)
    os.close(report_r)
    os.setsid()
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    errors = os.open("shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(errors, 2)
    os.close(devnull)
    os.close(errors)
    supervise(directory, report_w)


if __name__ == "__main__":
    main()
