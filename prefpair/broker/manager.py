"""Run a real Apache Kafka 4.4.0 broker (KRaft, broker and controller in one JVM) without Docker.

The jars come from Maven Central through ``pom.xml`` next to this module and are cached
once per machine (``~/.cache/prefpair/kafka-4.4.0/libs``, or under ``$PREFPAIR_BROKER_CACHE``).
A broker lives in a data directory that holds everything about it::

    server.properties   generated on every start from the packaged template
    log4j2.properties   the broker logs to stdout, which goes to broker.log
    broker.log          the broker's output (rotated once past 20 MB)
    broker.json         state: pid, bootstrap address, ports, version, cluster id
    kraft-logs/         topic partitions and the metadata log

Starting again on the same directory reuses the recorded ports and cluster id, so topics
and messages survive a stop/start. Every failure is a :class:`BrokerError` with a one-line
message, raised within the start timeout: the process never hangs waiting for a broker.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any

from prefpair.broker.exceptions import (
    BrokerError,
    BrokerStartError,
    FetchError,
    JavaNotFoundError,
    PortInUseError,
)
from prefpair.durable import write_text_atomic

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
HOST = "127.0.0.1"
CACHE_ENV = "PREFPAIR_BROKER_CACHE"
HEAP_ENV = "PREFPAIR_BROKER_HEAP"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 45.0
DEFAULT_STOP_TIMEOUT = 30.0
FETCH_TIMEOUT = 900.0
# Fully qualified, so Maven needs no plugin-prefix lookup and the version is pinned.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
PROPERTIES_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
LOG_DIRS = "kraft-logs"
FETCH_MARKER = ".complete"
MAX_LOG_BYTES = 20 * 1024 * 1024

LOG4J_CONFIG = """\
# Written by prefpair: the broker logs to stdout, which prefpair sends to broker.log.
status = warn
# Keep logging while Kafka's own shutdown hook runs, so broker.log shows a clean shutdown.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
# The full config dump (hundreds of lines per client and per start) is in server.properties anyway.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


# ---------------------------------------------------------------------------- jars
def default_cache_dir() -> Path:
    """Where fetched jars live: ``$PREFPAIR_BROKER_CACHE``, else ``$XDG_CACHE_HOME/prefpair``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "prefpair"


def kafka_home(cache_dir: Path | str | None = None) -> Path:
    """The cache directory of this Kafka version: ``<cache>/kafka-4.4.0``."""
    return Path(cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}"


def libs_dir(cache_dir: Path | str | None = None) -> Path:
    return kafka_home(cache_dir) / "libs"


def is_fetched(cache_dir: Path | str | None = None) -> bool:
    """Whether a complete copy of the jars is cached (the marker is written last)."""
    home = kafka_home(cache_dir)
    return (home / FETCH_MARKER).is_file() and (home / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()


def fetch(cache_dir: Path | str | None = None, *, timeout: float = FETCH_TIMEOUT) -> Path:
    """Resolve the broker's jars from Maven Central into the cache once; return the libs dir.

    Maven copies into ``libs.partial`` which becomes ``libs`` only when complete, and the
    marker file is written after that, so an interrupted download is simply redone.
    """
    home = kafka_home(cache_dir)
    home.mkdir(parents=True, exist_ok=True)
    libs = home / "libs"
    with _locked(home / ".lock"):
        if is_fetched(cache_dir):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise FetchError(
                "mvn not found on PATH: install Maven 3.6+ (e.g. apt-get install maven) to fetch the "
                f"Kafka {KAFKA_VERSION} jars, or point PREFPAIR_BOOTSTRAP_SERVERS at an existing cluster"
            )
        pom = home / "pom.xml"
        pom.write_text(resources.files("prefpair.broker").joinpath("pom.xml").read_text("utf-8"), "utf-8")
        partial = home / "libs.partial"
        (home / FETCH_MARKER).unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        log.info("fetching Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, cwd=home, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise FetchError(f"mvn did not finish fetching the Kafka jars within {timeout:.0f} s") from None
        output = [_ANSI.sub("", line) for line in (done.stdout + done.stderr).splitlines()]
        if done.returncode != 0:
            raise FetchError(
                f"mvn could not fetch the Kafka {KAFKA_VERSION} jars (exit {done.returncode}): "
                f"{_maven_error(output)}",
                log_tail=output[-20:],
                tail_title="mvn output",
            )
        if not (partial / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise FetchError(f"mvn finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {partial}")
        partial.rename(libs)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        marker = {"version": KAFKA_VERSION, "jars": jars, "fetched_at": time.time()}
        (home / FETCH_MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
        log.info("fetched %d jars in %.1f s", len(jars), time.monotonic() - started)
    return libs


# ---------------------------------------------------------------------------- java
def find_java() -> str:
    """A ``java`` of version 17 or newer from JAVA_HOME or PATH, else JavaNotFoundError."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        candidate = str(Path(java_home) / "bin" / "java")
    candidate = candidate or shutil.which("java")
    if candidate is None:
        raise JavaNotFoundError(
            f"java not found on PATH or in JAVA_HOME: Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+ "
            "(e.g. apt-get install openjdk-17-jre-headless)"
        )
    try:
        done = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaNotFoundError(f"{candidate} -version failed: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        raise JavaNotFoundError(f"cannot tell the version of {candidate}: {done.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise JavaNotFoundError(
            f"{candidate} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer "
            "(set JAVA_HOME)"
        )
    return candidate


# ---------------------------------------------------------------------------- processes
def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead, and are reaped if ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) is all we have
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        pass
    try:
        done = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True)
    except OSError:
        return []
    return done.stdout.split()


def is_kafka_process(pid: int) -> bool:
    """Whether ``pid`` is alive and is a java process running ``kafka.Kafka``."""
    if not pid_alive(pid):
        return False
    argv = [a for a in _command_line(pid) if a]
    return bool(argv) and "java" in Path(argv[0]).name and "kafka.Kafka" in argv


def read_state(data_dir: Path | str) -> dict[str, Any]:
    """The broker.json of a data dir, or ``{}`` when missing or unreadable."""
    try:
        state = json.loads((Path(data_dir) / STATE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def running_address(broker_dir: Path | str) -> str | None:
    """The bootstrap address of the local broker in ``broker_dir`` if it is running, else None."""
    state = read_state(broker_dir)
    pid, address = state.get("pid"), state.get("bootstrap")
    if isinstance(pid, int) and isinstance(address, str) and is_kafka_process(pid):
        return address
    return None


# ---------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes don't fetch or start into one directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as the JVM sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _new_cluster_id() -> str:
    """A Kafka-style cluster id: 16 random bytes, URL-safe base64, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _cluster_id_of(meta_properties: Path) -> str | None:
    for line in meta_properties.read_text("utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _maven_error(output: list[str]) -> str:
    """Maven's first ``[ERROR]`` line (the cause; later ones are boilerplate), else the key line."""
    for line in output:
        if line.startswith("[ERROR]") and line[7:].strip():
            return line[7:].strip().removesuffix("-> [Help 1]").strip()
    return _key_line(output) or "no output"


def _tail(path: Path, lines: int = 20) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


_KEY_PATTERN = re.compile(r"\b(ERROR|FATAL)\b|Exception|Error:|\[ERROR\]")


def _key_line(lines: list[str]) -> str:
    """The most telling line of some output: the last error-looking line, else the last line."""
    chosen = next((line for line in reversed(lines) if _KEY_PATTERN.search(line)), None)
    if chosen is None:
        chosen = next((line for line in reversed(lines) if line.strip()), "")
    chosen = re.sub(r"^\[[^\]]*\]\s*", "", chosen.strip())  # drop the log timestamp
    return chosen if len(chosen) <= 300 else chosen[:297] + "..."


# ---------------------------------------------------------------------------- the broker
@dataclass(frozen=True)
class BrokerStatus:
    """What ``prefpair broker status`` reports about one data directory."""

    running: bool
    bootstrap: str | None
    pid: int | None
    port: int | None
    controller_port: int | None
    version: str
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if self.running:
            return (
                f"running {self.bootstrap} (Kafka {self.version}, pid {self.pid}, data dir {self.data_dir})"
            )
        return f"stopped (data dir {self.data_dir})"


class LocalBroker:
    """A single-node Kafka broker living in ``data_dir``.

    ``start()`` returns the bootstrap address (and is a no-op if already running), ``stop()``
    terminates it; as a context manager it starts on enter and stops on exit. ``port`` and
    ``controller_port`` default to the ports recorded in the data dir, else free ones.
    """

    def __init__(
        self,
        data_dir: Path | str,
        cache_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.cache_dir = Path(cache_dir).absolute() if cache_dir else default_cache_dir()
        self.requested_port = port
        self.requested_controller_port = controller_port
        self.heap = heap or os.environ.get(HEAP_ENV) or DEFAULT_HEAP
        self._process: subprocess.Popen[bytes] | None = None

    # -------------------------------------------------------------- public API
    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def bootstrap(self) -> str | None:
        """The bootstrap address while running, else None."""
        return running_address(self.data_dir)

    def status(self) -> BrokerStatus:
        state = read_state(self.data_dir)
        pid = state.get("pid")
        running = isinstance(pid, int) and is_kafka_process(pid)
        return BrokerStatus(
            running=running,
            bootstrap=state.get("bootstrap") if running else None,
            pid=pid if running else None,
            port=state.get("port"),
            controller_port=state.get("controller_port"),
            version=str(state.get("version", KAFKA_VERSION)),
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start the broker unless it runs already, wait until it answers, return its address."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / ".lock"):
            address = running_address(self.data_dir)
            if address is not None:
                log.info("broker already running at %s (data dir %s)", address, self.data_dir)
                return address
            return self._start_locked(timeout)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); False if it wasn't running."""
        if not self.data_dir.is_dir():
            return False
        with _locked(self.data_dir / ".lock"):
            state = read_state(self.data_dir)
            pid = state.get("pid")
            was_running = isinstance(pid, int) and is_kafka_process(pid)
            if isinstance(pid, int) and was_running:
                self._terminate(pid, timeout)
            if state.get("pid") is not None:
                state["pid"] = None
                self._write_state(state)
            self._process = None
            return was_running

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker(data_dir={str(self.data_dir)!r}, bootstrap={self.bootstrap!r})"

    # -------------------------------------------------------------- internals
    def _start_locked(self, timeout: float) -> str:
        java = find_java()
        state = read_state(self.data_dir)
        port, controller_port = self._choose_ports(state)  # fail fast, before any download
        libs = fetch(self.cache_dir)
        started = time.monotonic()  # the timeout covers the broker, not a first download
        bootstrap = f"{HOST}:{port}"
        meta = self.data_dir / LOG_DIRS / "meta.properties"
        props = self._write_config(port, controller_port)
        classpath = f"{libs}{os.sep}*"
        log4j = f"-Dlog4j2.configurationFile={self.data_dir / LOG4J_FILE}"
        cluster_id: str | None
        if meta.is_file():
            cluster_id = _cluster_id_of(meta)
        else:
            cluster_id = _new_cluster_id()
            self._format(java, classpath, log4j, cluster_id, props)
        self._rotate_log()
        command = [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            log4j,
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
        with self.log_file.open("ab") as out:
            out.write(f"\n===== prefpair: starting Kafka {KAFKA_VERSION} on {bootstrap} =====\n".encode())
            out.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._process = process
        state.update(
            pid=process.pid,
            bootstrap=bootstrap,
            port=port,
            controller_port=controller_port,
            version=KAFKA_VERSION,
            cluster_id=cluster_id,
            started_at=time.time(),
        )
        self._write_state(state)
        try:
            self._wait_ready(process, bootstrap, port, started + timeout, timeout)
        except BaseException:
            self._terminate(process.pid, 10.0)
            state["pid"] = None
            self._write_state(state)
            raise
        log.info(
            "Kafka %s answers at %s after %.1f s (pid %d, log %s)",
            KAFKA_VERSION, bootstrap, time.monotonic() - started, process.pid, self.log_file,
        )  # fmt: skip
        return bootstrap

    def _choose_ports(self, state: dict[str, Any]) -> tuple[int, int]:
        recorded_port, recorded_controller = state.get("port"), state.get("controller_port")
        port = self.requested_port or (recorded_port if isinstance(recorded_port, int) else None)
        controller = self.requested_controller_port or (
            recorded_controller if isinstance(recorded_controller, int) else None
        )
        if port is None or controller is None:
            free = [p for p in _free_ports(3) if p not in (port, controller)]
            port = port or free.pop(0)
            controller = controller or free.pop(0)
        if port == controller:
            raise BrokerError(f"the broker port and the controller port must differ (both {port})")
        for name, number in (("broker", port), ("controller", controller)):
            if not port_free(number):
                hint = "--port" if name == "broker" else "--controller-port"
                raise PortInUseError(
                    f"{name} port {number} on {HOST} is already in use; "
                    f"stop what listens there or choose another with {hint}"
                )
        return port, controller

    def _write_config(self, port: int, controller_port: int) -> Path:
        template = resources.files("prefpair.broker").joinpath("server.properties").read_text("utf-8")
        text = Template(template).substitute(
            host=HOST,
            port=port,
            controller_port=controller_port,
            log_dirs=self.data_dir / LOG_DIRS,
        )
        header = "# Generated by `prefpair broker start` from prefpair/broker/server.properties.\n"
        props = self.data_dir / PROPERTIES_FILE
        props.write_text(header + text, "utf-8")
        (self.data_dir / LOG4J_FILE).write_text(LOG4J_CONFIG, "utf-8")
        return props

    def _format(self, java: str, classpath: str, log4j: str, cluster_id: str, props: Path) -> None:
        """Format the KRaft storage once (static quorum, so no --standalone)."""
        command = [
            java, "-Xmx256m", log4j, "-cp", classpath,
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise BrokerStartError("formatting the broker storage took longer than 60 s") from None
        output = (done.stdout + done.stderr).splitlines()
        with self.log_file.open("a", encoding="utf-8") as out:
            out.write("===== prefpair: kafka-storage format =====\n" + "\n".join(output) + "\n")
        if done.returncode != 0:
            raise BrokerStartError(
                f"formatting the broker storage failed (exit {done.returncode}): {_key_line(output)}",
                log_tail=output[-20:],
                tail_title="kafka-storage format output",
            )

    def _wait_ready(
        self, process: subprocess.Popen[bytes], bootstrap: str, port: int, deadline: float, timeout: float
    ) -> None:
        """Poll until a metadata request lists this broker; fail fast if the JVM exits."""
        admin = None
        reason = "no answer yet"
        while True:
            code = process.poll()
            if code is not None:
                tail = _tail(self.log_file)
                raise BrokerStartError(
                    f"the broker exited with code {code} during start-up: {_key_line(tail)} "
                    f"(see {self.log_file})",
                    log_tail=tail,
                    tail_title=f"last lines of {self.log_file}",
                )
            if _tcp_open(port):
                if admin is None:
                    admin = _quiet_admin(bootstrap)
                try:
                    metadata = admin.list_topics(timeout=2.0)
                except Exception as exc:  # KafkaException while the broker finishes starting
                    reason = str(exc)
                else:
                    if metadata.brokers:
                        return
                    reason = "metadata lists no broker yet"
            if time.monotonic() > deadline:
                tail = _tail(self.log_file)
                raise BrokerStartError(
                    f"the broker did not answer on {bootstrap} within {timeout:.0f} s ({reason}); "
                    f"last log line: {_key_line(tail)} (see {self.log_file})",
                    log_tail=tail,
                    tail_title=f"last lines of {self.log_file}",
                )
            time.sleep(0.25)

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM the broker's process group, SIGKILL it after ``timeout``, reap if ours."""
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            log.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise BrokerError(f"broker pid {pid} survived SIGKILL")

    @staticmethod
    def _signal(pid: int, signum: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid:  # started in its own session: take any children too
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.2)
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
        return not pid_alive(pid)

    def _write_state(self, state: dict[str, Any]) -> None:
        write_text_atomic(self.data_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def _rotate_log(self) -> None:
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > MAX_LOG_BYTES:
                os.replace(self.log_file, self.log_file.with_suffix(".log.1"))


_QUIET = logging.getLogger("prefpair.broker.librdkafka")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())


def _quiet_admin(bootstrap: str) -> Any:
    """An AdminClient whose librdkafka logs (connection refused while starting) stay silent."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap}, logger=_QUIET)
