"""Servers the fault tests own: a `redis-server` and a throwaway Postgres cluster.

The shared Postgres (5432) and Redis (6379) serve other people and CI, so a test that
stops, restarts or keeps a server down starts its own: `redis-server` on a free port
with nothing persisted, and a Postgres cluster made by `initdb` in a temporary directory
and run by `pg_ctl` on a free port (fsync on). Both can be stopped, kept down and started
again on the same port; `close()` always stops them by pid and removes their files.

Postgres refuses to run as root: as root (CI), `initdb` and `pg_ctl` run as the
`postgres` OS user through `runuser`, in a directory that user owns.
"""
from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.cluster import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def postgres_bin_dir() -> Path | None:
    """The newest `/usr/lib/postgresql/N/bin` holding initdb and pg_ctl (Debian's layout), else
    the directory of `initdb` on PATH; None when the server binaries are not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    found = candidates[-1] if candidates else shutil.which("initdb")
    if found is None:
        return None
    bin_dir = Path(found).resolve().parent
    return bin_dir if (bin_dir / "pg_ctl").exists() else None


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class ServerError(Exception):
    """A test server would not start or stop; the message holds its log."""


class RedisServer:
    """A `redis-server` on its own port and directory; nothing is saved, so a restart loses all data."""

    def __init__(self, binary: str = "redis-server", port: int | None = None):
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="engine-test-redis-"))
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.extra_args: list[str] = []  # e.g. cluster mode

    def url(self, db: int = 0) -> str:
        """The URL of database `db` on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "RedisServer":
        """Start on this server's port (the same one every time) and wait until it answers PING."""
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--daemonize", "no", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            if self._pong():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"redis-server not answering on port {self.port}:\n{self.log()}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by pid (with `--save ""` nothing is written: the data is gone), SIGKILL if it lingers."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL by pid: the server dies as a crashed machine's would, without a word to its peers."""
        if self.running:
            self.proc.kill()
            self.proc.wait(10)

    def flushall(self) -> None:
        """Empty every database (between tests sharing this server)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            if not s.recv(16).startswith(b"+OK"):
                raise ServerError("FLUSHALL refused")

    def log(self) -> str:
        return _tail(self.log_path)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PostgresCluster:
    """A throwaway Postgres cluster: `initdb` into a temporary directory, `pg_ctl` on a free port."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="engine-test-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        try:
            if self.run_as:
                os.chown(self.dir, pwd.getpwnam(self.run_as).pw_uid, -1)
            # --no-sync skips flushing initdb's own files (a throwaway cluster); the server fsyncs.
            self._command("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                          "--no-sync", "--no-instructions")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def url(self, database: str = "postgres") -> str:
        """The URL of `database` on this cluster (trust auth, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _command(self, tool: str, *args: str, timeout: float = START_TIMEOUT_S + 10) -> str:
        command = [str(self.bin_dir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise ServerError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                              f"\n{self.log()}")
        return done.stdout

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file (None when it is not running)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> "PostgresCluster":
        """Start on this cluster's port (the same one every time) and wait until it accepts connections."""
        if self.pid is not None:
            return self
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                   "-c fsync=on")
        self._command("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", str(int(START_TIMEOUT_S)),
                      "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (sessions ended, a clean shutdown) or `-m immediate` (a crash:
        recovery from the WAL at the next start); nothing to do when it is not running."""
        if self.pid is None:
            return
        self._command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(STOP_TIMEOUT_S)), "stop")

    def log(self) -> str:
        return _tail(self.log_path)

    def close(self) -> None:
        """Stop the cluster (by its postmaster's pid if pg_ctl fails) and remove its directory."""
        try:
            try:
                self.stop("immediate")
            except (ServerError, subprocess.TimeoutExpired):
                self._kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill(self) -> None:
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)  # the postmaster's immediate shutdown: it takes its children along
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and self.pid == pid:
            time.sleep(0.1)
        if self.pid == pid:
            os.kill(pid, signal.SIGKILL)


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free too, as Redis Cluster needs."""
    for _ in range(100):
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise ServerError("no free port pair for a cluster node")


class RedisClusterServers:
    """A Redis Cluster of our own: `masters` masters and as many replicas (`replicas` each), each
    a RedisServer on a free port with cluster mode on and nothing saved, joined by
    `redis-cli --cluster create`. `node_timeout_ms` is how long a master may be silent before
    its replica takes over (the test's failover time)."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000):
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """The engine's REDIS_URL for this cluster (one seed node; the client finds the rest)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:1])

    def start(self) -> "RedisClusterServers":
        """Start every node, create the cluster and wait until every node says it is ok."""
        for _ in range(self.masters * (1 + self.replicas)):
            node = RedisServer(port=_free_cluster_port())
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", str(node.dir / "nodes.conf"),
                               "--cluster-node-timeout", str(self.node_timeout_ms),
                               # a replica takes over however long since it last heard its master
                               "--cluster-replica-validity-factor", "0",
                               # replicas sync at once (the default waits 5 s for more of them)
                               "--repl-diskless-sync-delay", "0"]
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
                               str(self.replicas), "--cluster-yes"], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_ok()
        return self

    def info(self, node: RedisServer, section: str = "CLUSTER INFO") -> str:
        """A node's answer to `section` (a command), as text; '' when it does not answer."""
        done = subprocess.run(["redis-cli", "-p", str(node.port), *section.split()], capture_output=True,
                              text=True, timeout=10)
        return done.stdout if done.returncode == 0 else ""

    def wait_ok(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every running node reports `cluster_state:ok` and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.running]
            replicas = [n for n in running if "role:slave" in self.info(n, "INFO replication")]
            if all("cluster_state:ok" in self.info(n) for n in running) and all(
                    "master_link_status:up" in self.info(n, "INFO replication") for n in replicas):
                return
            time.sleep(0.1)
        raise ServerError("the cluster did not become ok:\n" + "\n".join(
            f"==== node {n.port}\n{self.info(n, 'CLUSTER NODES') if n.running else ''}{n.log()[-1500:]}"
            for n in self.nodes))

    def wait_failed_over(self, dead: RedisServer, timeout: float = START_TIMEOUT_S) -> None:
        """Until the running nodes agree that `dead` failed and its slots are served again."""
        deadline = time.monotonic() + timeout
        witness = next(n for n in self.nodes if n.running)
        while time.monotonic() < deadline:
            nodes = self.info(witness, "CLUSTER NODES")
            fields = next((line.split() for line in nodes.splitlines() if f":{dead.port}@" in line), [])
            if len(fields) > 2 and "fail" in fields[2].split(","):  # confirmed, not just suspected ("fail?")
                break
            time.sleep(0.05)
        self.wait_ok(max(deadline - time.monotonic(), 1))

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot as master now."""
        witness = next(n for n in self.nodes if n.running)
        slot = int(self.info(witness, f"CLUSTER KEYSLOT {key}").strip())
        for line in self.info(witness, "CLUSTER NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise ServerError(f"no master serves slot {slot}")

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
