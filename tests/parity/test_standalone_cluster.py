"""Spark as a real cluster: a standalone master and two workers on loopback, each a process of its own
started by the pyspark package's launcher, run `shoplake ingest` + `build` through `spark://`. The tables
equal the embedded engine's, and the master and the workers' folders show that executors did the work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoplake.engines.delta import DeltaStore

from .compare import differences

SELECTION = "+gold.daily_funnel +gold.user_features"
TABLES = ["bronze.clickstream", "quarantine.clickstream", "silver.events", "gold.daily_funnel",
          "gold.user_features"]
START_TIMEOUT = 120  # seconds for the master and both workers to come up (JVM starts on a busy machine)


@dataclass(frozen=True)
class Cluster:
    master: str  # spark://127.0.0.1:<port>
    webui: str  # http://127.0.0.1:<port>
    work_dirs: tuple[Path, ...]  # one per worker: <app id>/<executor id>/stderr

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=5) as response:
            return json.load(response)


def _free_ports(n: int) -> list[int]:
    """Ports free on loopback now (held open together, so they differ), for parallel runs not to clash."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(process: subprocess.Popen) -> None:
    """Kill the launcher's process group: the JVM and, for a worker, the executors it started."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _wait_for(what: str, ready: Callable[[], bool], processes: list[tuple[subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for process, log in processes:
            if process.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                pytest.fail(f"{log.name}: exited with {process.returncode} before {what}:\n" + "\n".join(tail))
        try:
            if ready():
                return
        except OSError:  # the web UI is not listening yet
            pass
        except ValueError:  # it answers, but not yet with its JSON (a full run once saw the HTML page there)
            pass
        time.sleep(0.5)
    pytest.fail(f"no {what} within {START_TIMEOUT} s; logs in {processes[0][1].parent}")


@pytest.fixture(scope="module")
def spark_cluster(request, tmp_path_factory) -> Cluster:
    """A standalone master and two workers (1 core, 1 GB each) on loopback, torn down after the module."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 on PATH")
    pyspark = pytest.importorskip("pyspark")
    home = Path(pyspark.__file__).parent
    root = tmp_path_factory.mktemp("spark-cluster")
    port, webui_port = _free_ports(2)
    master = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m",
           "SPARK_LOG_DIR": str(root / "logs"), "SPARK_CONF_DIR": str(root / "conf")}
    (root / "conf").mkdir()  # empty: no site configuration reaches the daemons
    started: list[tuple[subprocess.Popen, Path]] = []

    def launch(name: str, *args: str) -> None:
        log = root / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        request.addfinalizer(lambda: _stop(process))  # registered at once: a failed start-up tears down too
        started.append((process, log))

    cluster = Cluster(master, f"http://127.0.0.1:{webui_port}", (root / "worker-1", root / "worker-2"))
    launch("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
           "--webui-port", str(webui_port))
    _wait_for("the master's web UI", lambda: cluster.state()["status"] == "ALIVE", started)
    for i, work_dir in enumerate(cluster.work_dirs, 1):
        # Port 0: any free port, for the worker's RPC and web UI (the default UI port 8081 would clash).
        launch(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", "0",
               "--webui-port", "0", "--cores", "1", "--memory", "1g", "--work-dir", str(work_dir), master)
    _wait_for("two registered workers", lambda: cluster.state()["aliveworkers"] == 2, started)
    return cluster


def _shoplake(*args: str, lake: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    """The CLI as a subprocess, so its Spark driver is a process of its own, with no settings inherited."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPLAKE_", "SPARK_"))}
    done = subprocess.run([sys.executable, "-m", "shoplake", "--lake", str(lake), *args], cwd=cwd, timeout=600,
                          env={**clean, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
                          capture_output=True, text=True)
    assert done.returncode == 0, f"shoplake {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_ingest_and_build_on_a_standalone_cluster_equal_the_embedded_engine(spark_cluster, tmp_path):
    _shoplake("generate", "clickstream", "--out", str(tmp_path / "input"), "--rows", "3000", "--days", "7",
              "--seed", "5", "--dirty-fraction", "0.01", lake=tmp_path / "unused", cwd=tmp_path)
    lakes = {}
    for engine, env in (("duckdb", {}), ("spark", {"SHOPLAKE_SPARK_MASTER": spark_cluster.master,
                                                   "SHOPLAKE_SPILL_DIR": str(tmp_path / "spill")})):
        lakes[engine] = tmp_path / f"lake-{engine}"
        _shoplake("--engine", engine, "ingest", "clickstream", str(tmp_path / "input"), lake=lakes[engine],
                  cwd=tmp_path, env=env)
        _shoplake("--engine", engine, "build", SELECTION, lake=lakes[engine], cwd=tmp_path, env=env)

    duck, spark = DeltaStore(lakes["duckdb"]), DeltaStore(lakes["spark"])
    for name in TABLES:
        left, right = duck.open(name).to_pyarrow_table(), spark.open(name).to_pyarrow_table()
        assert left.num_rows > 0, f"{name} is empty: the comparison proves nothing"
        assert differences(left, right) == [], name

    # The work ran on the cluster: two applications (ingest, build) came and went, each with executors
    # on both workers, and both workers' executors ran tasks.
    state = spark_cluster.state()
    apps = [a["id"] for a in state["completedapps"] if a["name"] == "shoplake" and a["state"] == "FINISHED"]
    assert len(apps) == 2 and state["activeapps"] == [], state
    tasks = {}
    for work_dir in spark_cluster.work_dirs:
        logs = [log for app in apps for log in (work_dir / app).glob("*/stderr")]
        assert {log.parts[-3] for log in logs} == set(apps), f"{work_dir}: executor logs {logs}"
        tasks[work_dir.name] = sum(log.read_text(errors="replace").count("Running task") for log in logs)
    assert all(tasks.values()), f"tasks run per worker: {tasks}"
