"""The one place a Spark session is created, from the settings (the Spark engine and Spark scoring
share it). PySpark is an optional extra: without it, asking for Spark is a one-line error."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from shoplake.config import Settings
from shoplake.errors import EngineUnavailableError

log = logging.getLogger(__name__)


def spark_session(settings: Settings):
    """Return the active Spark session, or start one configured from `settings`.

    Local sessions pin the time zone to UTC (as the embedded engine does) and write Parquet timestamps
    as microseconds, which `deltalake`, DuckDB and Polars all read.
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
        if settings.spark_master.startswith("local"):
            # One process: keep the driver's RPC and block manager on loopback, rather than on the address
            # the host name resolves to (Spark's default, which may be another interface or none at all).
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
