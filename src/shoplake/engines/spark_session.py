"""The one place a Spark session is created, from the settings (the Spark engine and Spark scoring
share it). PySpark is an optional extra: without it, asking for Spark is a one-line error."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from shoplake.config import Settings
from shoplake.errors import ConfigError, EngineUnavailableError

log = logging.getLogger(__name__)


def spark_session(settings: Settings):
    """Return the active Spark session, or start one configured from `settings`.

    Local sessions pin the time zone to UTC (as the embedded engine does) and write Parquet timestamps
    as microseconds, which `deltalake`, DuckDB and Polars all read. A standalone master (`spark://`) must
    accept a TCP connection first; one on loopback keeps the driver on loopback too.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineUnavailableError("the spark engine needs the 'spark' extra: "
                                     "pip install 'shoplake[spark]' (and Java 17)") from exc
    # Local Python workers (UDFs, model scoring) must run this interpreter, with its packages, not the
    # first `python3` on PATH; PySpark takes that only from the environment of the driver process.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("shoplake")
    if settings.spark_remote:
        builder = builder.remote(settings.spark_remote)
    else:
        scratch = Path(settings.spill_dir or Path(tempfile.gettempdir()) / "shoplake-spill") / "spark"
        builder = (builder.master(settings.spark_master)
                   .config("spark.driver.memory", settings.spark_driver_memory)
                   .config("spark.ui.enabled", "false")
                   .config("spark.pyspark.python", sys.executable)
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.local.dir", str(scratch))
                   # Small data on few cores: 200 shuffle partitions would mostly schedule empty tasks.
                   .config("spark.sql.shuffle.partitions", str(max(4, 2 * (os.cpu_count() or 2))))
                   .config("spark.sql.adaptive.enabled", "true"))
        masters = _standalone_masters(settings.spark_master)
        if masters:
            _check_reachable(settings.spark_master, masters)
        if settings.spark_master.startswith("local") or (masters and all(_is_loopback(h) for h, _ in masters)):
            # One machine: keep the driver's RPC and block manager on loopback, rather than on the address
            # the host name resolves to (Spark's default, which may be another interface or none at all);
            # executors of a loopback master must connect back to the driver there.
            builder = (builder.config("spark.driver.host", "127.0.0.1")
                       .config("spark.driver.bindAddress", "127.0.0.1"))
    builder = (builder.config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"))
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j/JVM start-up failures arrive as several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailableError(f"cannot start Spark ({settings.spark_remote or settings.spark_master}): "
                                     f"{first}; Spark needs Java 17 on PATH or JAVA_HOME") from exc
    if not settings.spark_remote:  # Spark Connect sessions have no SparkContext
        # Failed tasks are reported by shoplake as one line; Spark would print their stack traces first.
        session.sparkContext.setLogLevel("FATAL")
    return session


def _standalone_masters(master: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of a standalone master URL (`spark://h1:7077[,h2:7077]`); [] for other URLs."""
    if not master.startswith("spark://"):
        return []
    pairs = []
    for part in master.removeprefix("spark://").split(","):
        address = urlsplit(f"//{part}")
        try:
            port = address.port or 7077
        except ValueError as exc:
            raise ConfigError(f"spark_master {master!r}: {part!r} is not host:port") from exc
        if not address.hostname:
            raise ConfigError(f"spark_master {master!r}: {part!r} is not host:port")
        pairs.append((address.hostname, port))
    return pairs


def _check_reachable(master: str, masters: list[tuple[str, int]], timeout: float = 0.5) -> None:
    """Fail in a moment when no master accepts a connection: Spark itself retries for over a minute (74 s
    measured), then fails with a message that does not name the master."""
    failures = []
    for host, port in masters:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError as exc:
            failures.append(f"{host}:{port}: {exc.strerror or exc or type(exc).__name__}")
    raise EngineUnavailableError(f"spark master {master} is not reachable ({'; '.join(failures)}): start the "
                                 f"master (docs/CLUSTER.md, \"A standalone cluster\") or set spark_master")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False
