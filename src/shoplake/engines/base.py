"""The one interface every engine implements, and the capabilities by which callers choose one.

Every engine binds catalog names to Delta snapshots, runs SQL written once in DuckDB's dialect
(translated with sqlglot where it must be), reads source files and writes tables through `DeltaStore`.
Beyond that, engines differ in what they can do, and say so in `capabilities`; a caller names what it
needs (`lake.engine(Capability.EMBEDDED_SQL)`) instead of asking which engine is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from shoplake.catalog.spec import TableSpec
    from shoplake.config import Settings
    from shoplake.engines.delta import DeltaStore
    from shoplake.sources.lines import LineAccount
    from shoplake.sources.schemas import SourceColumn


class Capability(StrEnum):
    """What an engine can do beyond the common interface."""

    # Runs DuckDB-dialect SQL exactly as written, in this process, without starting a cluster session:
    # ad-hoc queries (time-travel views), the dashboard, the reconciliation queries of `verify`, and the
    # model inputs, whose SQL the leakage audit proved as written (a translation would be unaudited).
    EMBEDDED_SQL = "embedded_sql"
    # Computes a registered model's predictions on the engine's workers (MLflow's Spark UDF).
    DISTRIBUTED_INFERENCE = "distributed_inference"
    # Parses source files on the engine's workers, which write the Bronze files themselves
    # (`stage_source`); only counts and refused rows reach this process. Without it, `read_source`
    # streams the rows here and ingestion writes them.
    DISTRIBUTED_INGEST = "distributed_ingest"


@dataclass
class StagedSource:
    """A source file parsed and its good rows staged as uncommitted Bronze files (`Engine.stage_source`)."""

    files: list[Path]  # uncommitted Bronze Parquet files (none when the rows were only counted)
    readable_rows: int  # rows the parser read: the good ones and those with a value that does not parse
    good_rows: int
    refused: pa.Table  # the rows with a value that does not parse: `_reason`, `_source_row`, `_raw_<column>`


def part_of(column: str, count: int) -> str:
    """The SQL number (0 to count - 1) of the part of a split build a row is in: its `column` modulo
    `count`, and 0 where it is NULL."""
    quoted = f'"{column}"'
    # Both engines' % keeps the dividend's sign, hence the second modulo.
    return f"CASE WHEN {quoted} IS NULL THEN 0 ELSE ({quoted} % {count} + {count}) % {count} END"


def part_filter(column: str, count: int, index: int) -> str:
    """The SQL condition of the rows of part `index` of `count` (`part_of`)."""
    return f"{part_of(column, count)} = {index}"


@runtime_checkable
class Engine(Protocol):
    """One engine session (a context manager); `DuckDBEngine` and `SparkEngine` implement it."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, settings: Settings, store: DeltaStore) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    def bind(self, spec: TableSpec, *, version: int | datetime | None = None, where: str | None = None,
             view: str | None = None, batches: Sequence[str] | None = None) -> int | None:
        """Make a catalog table queryable by its name as one snapshot; returns the version bound."""
        ...

    def parts_for(self, rows: int) -> int:
        """In how many parts a build that can be split (`TableSpec.split_by`) runs over `rows` input rows."""
        ...

    def bind_part(self, spec: TableSpec, *, version: int | None, column: str, count: int, index: int) -> None:
        """Bind a catalog table to one part of a snapshot: the rows `part_filter(column, count, index)`
        keeps (a split build's part)."""
        ...

    def bind_arrow(self, name: str, data: pa.Table) -> None: ...

    def materialize(self, name: str, sql: str, params: Sequence[Any] | None = None) -> None: ...

    def define_view(self, name: str, sql: str) -> None: ...

    def drop(self, name: str) -> None: ...

    def drop_view(self, name: str) -> None: ...

    def stream(self, sql: str, params: Sequence[Any] | None = None) -> pa.RecordBatchReader: ...

    def table(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    def write_table(self, store: DeltaStore, spec: TableSpec, sql: str | Sequence[str], *, mode: str,
                    meta: dict[str, Any], params: Sequence[Any] | None = None, scans_stored: bool = False) -> int:
        """Write the rows of `sql` as one commit; `scans_stored` says the queries only read rows the
        session already holds (an engine may then leave more of its memory to the writer)."""
        ...

    def stage(self, store: DeltaStore, spec: TableSpec, sql: str, *, scans_stored: bool = True) -> list[Path]:
        """Write the rows of `sql` as uncommitted Parquet files in the table's folder (`commit_files`);
        `scans_stored` as for `write_table`."""
        ...

    def define_files_view(self, name: str, files: Sequence[Path]) -> None:
        """A view `name` of the rows of Parquet files written by `stage`."""
        ...



class StreamsSources(Protocol):
    """How an engine without `Capability.DISTRIBUTED_INGEST` reads source files (`DuckDBEngine`): it
    streams the typed rows to this process, and ingestion numbers them and writes Bronze."""

    def read_source(self, path: Path, fmt: str, header: list[str], mapping: dict[str, str],
                    columns: Sequence[SourceColumn], *, display: str,
                    encoding: str = "utf-8") -> tuple[pa.RecordBatchReader, LineAccount]: ...


class StagesSources(Protocol):
    """How an engine with `Capability.DISTRIBUTED_INGEST` reads source files (`SparkEngine`): its workers
    parse a file and stage its good rows as uncommitted Bronze files; only counts and refused rows return."""

    def stage_source(self, store: DeltaStore, bronze: TableSpec, path: Path, fmt: str, header: list[str],
                     mapping: dict[str, str], columns: Sequence[SourceColumn], *, lineage: dict[str, Any],
                     display: str, encoding: str = "utf-8", write: bool = True) -> tuple[StagedSource, LineAccount]: ...


# The engines by setting name (`engine = "spark"`), as "module:class", imported when first used.
ENGINES = {"duckdb": "shoplake.engines.duckdb:DuckDBEngine", "spark": "shoplake.engines.spark:SparkEngine"}
# The engine that runs in this process and can do everything `EMBEDDED_SQL` promises.
EMBEDDED = "duckdb"
