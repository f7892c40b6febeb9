"""The supervisor of one container, started as `python -I -S -c BOOT shim.py <container dir>`.

Standard library only and nothing from kubi (see BOOT in oci.py: this file is imported by
path so its bytecode is cached). It starts `<runtime> run -d` (runc or crun: neither keeps
the exit code of a detached container), becomes the container's parent (child
subreaper), writes its stdout/stderr to the CRI log file, serves attachments on
`attach.sock`, and records the exit code and times in files, so all of it survives a
restart of the node agent.

One runs per container, so its start-up is on every pod's path: it imports only
modules written in C (`_socket`, `_signal`, `_json`, `_ctypes` rather than their Python
wrappers, which pull in enum, re and collections and cost the shim three times the
CPU of a bare interpreter).

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

import _json
import _signal
import _socket
import errno
import os
import select
import struct
import sys
import time

FRAME_STDIN, FRAME_CLOSE_STDIN, FRAME_STDOUT, FRAME_STDERR, FRAME_RESIZE, FRAME_EXIT = (
    0, 1, 1, 2, 3, 4)
HEADER = struct.Struct("!BI")
MAX_LINE = 16 * 1024  # longer lines are split into P records, as containerd does
MAX_CLIENT_BACKLOG = 1 << 20
DRAIN_SECONDS = 1.0
PR_SET_CHILD_SUBREAPER = 36

JSONValue = str | int | bool | None


class _JSONContext:
    """What the C JSON scanner reads its options from (json.JSONDecoder's defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity


_scan_json = _json.make_scanner(_JSONContext())  # type: ignore[arg-type]


def parse_json(text: str) -> object:
    """A JSON document; ValueError when it is not one."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip():
        raise ValueError("extra data after JSON")
    return value


def read_json(path: str) -> dict[str, JSONValue]:
    with open(path) as file:
        value = parse_json(file.read().strip())
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def to_json(data: dict[str, JSONValue]) -> str:
    """A flat JSON object (strings, integers, booleans, null)."""
    def value_text(value: JSONValue) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        return str(_json.encode_basestring_ascii(value))
    return "{" + ", ".join(f"{_json.encode_basestring_ascii(key)}: {value_text(value)}"
                           for key, value in data.items()) + "}"


def log_time(time_ns: int) -> bytes:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{nanos:09d}Z").encode()


def write_json(path: str, data: dict[str, JSONValue], durable: bool = True) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        file.write(to_json(data))
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)


def set_child_subreaper() -> int:
    """prctl(PR_SET_CHILD_SUBREAPER, 1) through _ctypes (ctypes itself costs 4x more);
    0 when done."""
    import _ctypes

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL  # returns an int, takes ints: the defaults

    class Library:  # what a function is looked up in: anything with a dlopen handle
        _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]

    prctl = Function(("prctl", Library()))  # type: ignore[arg-type]
    return int(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))


def receive_fd(sock: _socket.socket) -> int | None:
    """A descriptor sent over a unix socket (SCM_RIGHTS), as socket.recv_fds does."""
    _, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_LEN(4))
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            fds = struct.unpack(f"{len(data) // 4}i", data[:len(data) // 4 * 4])
            for extra in fds[1:]:
                os.close(extra)
            return int(fds[0])
    return None


def unix_listener(path: str, backlog: int) -> _socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(backlog)
    return listener


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
    def __init__(self, sock: _socket.socket) -> None:
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
    try:
        with open(log_path) as file:
            lines = file.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        try:
            entry = parse_json(line.strip())
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message


class Shim:
    def __init__(self, directory: str, config: dict[str, JSONValue]) -> None:
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
        # Absolute: the runtimes chdir into the bundle before they use these paths.
        return [str(self.config["runtime"]), "--root", str(self.config["runtime_root"]),
                "--log", os.path.abspath("runc.log"), "--log-format", "json", *args]

    def start(self) -> int:
        """Start the container; returns its pid or raises RuntimeError."""
        devnull = os.open(os.devnull, os.O_RDWR)
        args = ["run", "-d", "--pid-file", os.path.abspath("container.pid"), "--bundle",
                str(self.config["bundle"])]
        console = None
        # Both runtimes look for a relative console socket in the bundle (they chdir
        # there); relative, as unix socket paths are short.
        console_path = os.path.join(os.path.relpath(str(self.config["bundle"])),
                                    "console.sock")
        if self.tty:
            console = unix_listener(console_path, 1)
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
        argv = self.runc_argv(*args, str(self.config["id"]))
        runc = os.posix_spawnp(argv[0], argv, dict(os.environ), file_actions=actions)
        if not self.tty:
            for fd in stdio:
                if fd != devnull:
                    os.close(fd)
        status = None
        while status is None:
            if console is not None and self.master is None:
                # The terminal arrives on the console socket while the runtime runs.
                ready, _, _ = select.select([console], [], [], 0.01)
                if ready:
                    fd, _ = console._accept()  # type: ignore[attr-defined]
                    connection = _socket.socket(fileno=fd)
                    master = receive_fd(connection)
                    connection.close()
                    if master is not None:
                        self.master = master
                        self.outputs = {self.master: "stdout"}
                        if self.stdin_open:
                            self.stdin_fd = self.master
                pid, raw = os.waitpid(runc, os.WNOHANG)
            else:
                pid, raw = os.waitpid(runc, 0)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
        if console is not None:
            console.close()
            try:
                os.unlink(console_path)
            except FileNotFoundError:
                pass
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
            try:
                os.write(self.stdin_fd, b"\x04")  # EOF for the terminal's reader
            except OSError:
                pass
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
        if client in self.clients:
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
                try:
                    os.write(self.stdin_fd, payload)
                except OSError:
                    pass
            elif kind == FRAME_CLOSE_STDIN:
                self.close_stdin()
            elif kind == FRAME_RESIZE and self.master is not None and length == 4:
                import fcntl
                import termios

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
        listener = unix_listener("attach.sock", 8)
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
            readers: list[int | _socket.socket] = [wakeup, listener, *self.outputs,
                                                   *(c.sock for c in self.clients)]
            writers = [c.sock for c in self.clients if c.outbox]
            timeout = 0.1 if exit_code is not None else 5.0
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for item in readable:
                if item == wakeup:
                    try:
                        os.read(wakeup, 512)
                    except BlockingIOError:
                        pass
                elif item is listener:
                    try:
                        fd, _ = listener._accept()  # type: ignore[attr-defined]
                    except BlockingIOError:
                        continue
                    sock = _socket.socket(fileno=fd)
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
        try:
            os.unlink("attach.sock")
        except FileNotFoundError:
            pass
        assert exit_code is not None
        return exit_code

    def finish_clients(self, exit_code: int) -> None:
        self.broadcast(FRAME_EXIT, struct.pack("!i", exit_code))
        for client in list(self.clients):
            client.sock.setblocking(True)
            client.sock.settimeout(1.0)
            try:
                client.sock.sendall(client.outbox)
            except OSError:
                pass
            client.sock.close()
        self.clients.clear()


def supervise(directory: str, report: int) -> None:
    """The daemon side: runs until the container exits."""
    shim = Shim(directory, read_json("shim.json"))
    with open("shim.pid", "w") as file:
        file.write(str(os.getpid()))
    try:
        pid = shim.start()
        started_ns = time.time_ns()
    except Exception as error:
        os.write(report, f"error: {error}".encode())
        os.close(report)
        raise SystemExit(1) from None
    try:
        cgroup_dir = memory_cgroup_dir(pid)
    except (OSError, ValueError):
        cgroup_dir = ""
    oom_before = oom_kills(cgroup_dir) if cgroup_dir else 0
    # Not fsync'ed: after a crash of the machine the container is gone anyway.
    write_json("started.json", {"pid": pid, "started_at": started_ns,
                                "memory_cgroup": cgroup_dir}, durable=False)
    os.write(report, b"ok")
    os.close(report)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    _signal.set_wakeup_fd(wake_w)

    def on_reopen(_signum: int, _frame: object) -> None:
        shim.reopen_requested = True

    _signal.signal(_signal.SIGCHLD, lambda _s, _f: None)
    _signal.signal(_signal.SIGUSR1, on_reopen)
    exit_code = shim.serve(pid, wake_r)
    finished_ns = time.time_ns()
    oom = bool(cgroup_dir) and oom_kills(cgroup_dir) > oom_before
    write_json("exit.json", {"exit_code": exit_code, "finished_at": finished_ns,
                             "oom_killed": oom})
    shim.finish_clients(exit_code)


def main(directory: str) -> None:
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    directory = os.path.abspath(directory)
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
    for signum in (_signal.SIGHUP, _signal.SIGINT, _signal.SIGTERM, _signal.SIGPIPE):
        _signal.signal(signum, _signal.SIG_IGN)
    set_child_subreaper()
    devnull = os.open(os.devnull, os.O_RDWR)
    errors = os.open("shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(errors, 2)
    os.close(devnull)
    os.close(errors)
    supervise(directory, report_w)


if __name__ == "__main__":
    main(sys.argv[1])
