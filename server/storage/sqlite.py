"""The domain stores together (one implementation for both backends), and the SQLite storage.

:class:`SqlStore` is every domain store (issue 15's split): ``registry.py`` (institutions, registered units and
their status history, the units' live state, the unit lists and the registry search), ``samples.py`` (ingest,
samples, events, dead letters), ``outages.py`` (county and cell-site outages), ``rollups.py`` (roll-ups, slot codes,
the recount queue, network service levels), ``datause.py``, ``alerts.py``, ``commands.py``, ``audit.py``,
``reportfiles.py`` and ``meta.py``; users, sessions and tokens are ``accounts.py``'s. Each is written against the
engine's small surface (``server/storage/engine.py``) in the SQL both SQLite and PostgreSQL run.
:class:`SqliteStorage` is them on SQLite (:class:`SqliteEngine`), :class:`server.storage.postgres.PostgresStorage`
on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from .accounts import AccountStore
from .alerts import AlertStore
from .audit import AuditStore
from .commands import CommandStore
from .datause import DataUseStore
from .engine import (  # noqa: F401  (re-exported: the names other modules import from here)
    VERSION_KEYS,
    VERSION_TTL_S,
    SqliteEngine,
    private_database,
    schema_version,
    too_new,
)
from .meta import MetaStore
from .outages import OutageStore
from .registry import RegistryStore, prefix_range  # noqa: F401
from .reportfiles import ReportFileStore
from .rollups import RollupStore
from .samples import DEAD_LETTERS_KEPT, SampleStore  # noqa: F401
from .schema import (  # noqa: F401
    _DEAD_LETTER_SCHEMA,
    _FLEET_SCHEMA,
    _SCHEMA,
    SCHEMA_VERSION,
    SchemaTooNew,
)


class SqlStore(RegistryStore, SampleStore, OutageStore, MetaStore, AlertStore, RollupStore, DataUseStore,
               ReportFileStore, CommandStore, AuditStore):
    """Every domain's queries, on an engine (``write()``, ``_all``, ``_quick``, ... and the dialect hooks)."""


class SqliteStorage(SqliteEngine, AccountStore, SqlStore):
    def __init__(self, path: Any, readers: int = 4) -> None:
        SqliteEngine.__init__(self, path, readers)
        SqlStore.__init__(self)
