"""SQLAlchemy models of the leaderboard; they never leave :mod:`archsearch.storage._sql`.

JSON columns are ``Text`` holding canonical JSON (portable across SQLite and
PostgreSQL, and what the records expose). Query helpers are classmethods that take
the session explicitly.
"""

from __future__ import annotations

import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from archsearch.errors import StorageError
from archsearch.storage._lease import MAX_HOST_LENGTH, TOKEN_LENGTH
from archsearch.storage._records import (
    MAX_HASH_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PURPOSE_LENGTH,
    MAX_STAGE_LENGTH,
    MAX_STATUS_LENGTH,
    MAX_TASK_LENGTH,
    MAX_WORKER_LENGTH,
)

# Any schema change needs a revision in migrations/versions (and _migrate.HEAD_REVISION moved to it).
META_TABLE = "archsearch_meta"
MAX_META_KEY_LENGTH = 64
MAX_META_VALUE_LENGTH = 256


class BaseModel(DeclarativeBase):
    """Declarative base of the archsearch tables."""

    _label = "row"  # what one row is called in error messages

    @classmethod
    def find_or_raise_by_id(cls, session: Session, row_id: int):
        """The row with primary key ``row_id``, else StorageError naming the table."""
        row = session.get(cls, row_id)
        if row is None:
            raise StorageError(f"no {cls._label} with id {row_id} in this database")
        return row


class MetaModel(BaseModel):
    """Key/value facts about the database itself (schema version, writer version)."""

    __tablename__ = META_TABLE
    key: Mapped[str] = mapped_column(String(MAX_META_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(MAX_META_VALUE_LENGTH))


class SearchModel(BaseModel):
    """A search run."""

    _label = "search"

    __tablename__ = "searches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), unique=True)
    config: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(MAX_STATUS_LENGTH))
    state: Mapped[str] = mapped_column(Text)
    normalizers: Mapped[str | None] = mapped_column(Text, nullable=True)  # frozen reference scores (JSON)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    finished: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    # the driver's event counters (JSON {name: count}); changed only with the rows they count
    counters: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # the lease: the one driver that may write this search (all NULL when none holds it)
    lease_token: Mapped[str | None] = mapped_column(String(TOKEN_LENGTH), nullable=True)
    lease_host: Mapped[str | None] = mapped_column(String(MAX_HOST_LENGTH), nullable=True)
    lease_machine: Mapped[str | None] = mapped_column(String(MAX_HOST_LENGTH), nullable=True)
    lease_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_since: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    lease_heartbeat: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)

    @classmethod
    def find_by_name(cls, session: Session, name: str) -> "SearchModel | None":
        """The search called ``name``, or None."""
        return session.scalars(select(cls).where(cls.name == name)).one_or_none()


class ArchitectureModel(BaseModel):
    """A cell of a search, unique by structural hash (and by name) within the search."""

    _label = "architecture"

    __tablename__ = "architectures"
    __table_args__ = (
        UniqueConstraint("search_id", "structural_hash", name="uq_architectures_search_hash"),
        UniqueConstraint("search_id", "name", name="uq_architectures_search_name"),
        Index("ix_architectures_search_stage", "search_id", "stage"),
        Index("ix_architectures_search_fingerprint", "search_id", "fingerprint"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    graph_json: Mapped[str] = mapped_column(Text)
    structural_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH))
    fingerprint: Mapped[str | None] = mapped_column(String(MAX_HASH_LENGTH), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("architectures.id"), nullable=True)
    mutation: Mapped[str | None] = mapped_column(Text, nullable=True)
    origin: Mapped[str] = mapped_column(String(MAX_STATUS_LENGTH))
    stage: Mapped[str] = mapped_column(String(MAX_STAGE_LENGTH))
    created: Mapped[datetime.datetime] = mapped_column(DateTime)

    @classmethod
    def find_by_hash(cls, session: Session, search_id: int, structural_hash: str) -> "ArchitectureModel | None":
        """The architecture of the search with this structural hash, or None."""
        stmt = select(cls).where(cls.search_id == search_id, cls.structural_hash == structural_hash)
        return session.scalars(stmt).one_or_none()


class EvaluationModel(BaseModel):
    """One training run; unique by (architecture, task, hyper-parameter hash)."""

    _label = "evaluation"

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("architecture_id", "task", "hparams_hash", name="uq_evaluations_arch_task_hparams"),
        Index("ix_evaluations_status", "status"),
        Index("ix_evaluations_arch_status_task", "architecture_id", "status", "task"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    architecture_id: Mapped[int] = mapped_column(ForeignKey("architectures.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(MAX_TASK_LENGTH))
    hparams: Mapped[str] = mapped_column(Text)
    hparams_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH))
    purpose: Mapped[str] = mapped_column(String(MAX_PURPOSE_LENGTH))
    status: Mapped[str] = mapped_column(String(MAX_STATUS_LENGTH))
    metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid: Mapped[float | None] = mapped_column(Float, nullable=True)
    test: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    diverged: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(MAX_WORKER_LENGTH), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    finished: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)

    @classmethod
    def find_by_key(
        cls, session: Session, architecture_id: int, task: str, hparams_hash: str
    ) -> "EvaluationModel | None":
        """The evaluation with this natural key, or None."""
        stmt = select(cls).where(
            cls.architecture_id == architecture_id, cls.task == task, cls.hparams_hash == hparams_hash
        )
        return session.scalars(stmt).one_or_none()
