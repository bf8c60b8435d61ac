"""Server settings: a typed model loaded from one TOML file; unknown keys are refused."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Strict):
    host: str = "localhost"
    port: int = Field(8883, ge=1, le=65535)
    ca_file: str = "ca.pem"
    cert_file: str = "server-client.pem"
    key_file: str = "server-client.key"
    # Ignored by the broker, which takes the certificate's CN as the client id (use_username_as_clientid): the
    # server's session is the identity's (posfleet-server); a second ingest process needs its own certificate
    # (posfleet ca issue-server --name posfleet-server-2). Kept so existing files stay valid.
    client_id: str = "posfleet-server-1"
    keepalive_s: int = Field(60, ge=5, le=3600)
    # MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may push to us at once.
    # We acknowledge only after the database commit, so this is the ingest pipeline's depth.
    receive_maximum: int = Field(2000, ge=10, le=65535)
    # How long the broker keeps this process's session (its subscriptions and the telemetry queued for it) while it
    # is gone. One server: long (7 days: a server down for a week finds the fleet's data waiting). Several processes
    # sharing the telemetry: short (60 s): a process that dies must not hold its share of the shared subscription,
    # which then goes to the others; the terminals resend what it took and never acknowledged
    # (docs/deployment-large.md).
    session_expiry_s: int = Field(7 * 86400, ge=0, le=30 * 86400)
    # while the broker cannot be reached: logged at once (host:port and the error), then this often
    report_every_s: float = Field(60.0, gt=0)
    # The shared subscription's group. A secret of the server's: mosquitto's ACL cannot refuse a subscription, so
    # a terminal that knew the group could join it and take its share of every unit's telemetry (which the ACL
    # then withholds from it: lost for the server). Empty: derived from the server's private key (stable across
    # restarts, as the persistent session needs); processes sharing the load set one random value
    # (docs/decisions/011-broker-identity-and-acl.md).
    share_group: str = ""

    @field_validator("share_group")
    @classmethod
    def _group(cls, v: str) -> str:
        if v and (any(ch in v for ch in "/+#") or v.lower() == "posfleet" or len(v) < 16):
            raise ValueError("must be a secret of at least 16 characters without / + # (or empty: derived from "
                             "the key); the old default 'posfleet' is known to every terminal")
        return v


class StorageSettings(_Strict):
    url: str = "sqlite:///var/lib/posfleet/fleet.sqlite"
    # read-only connections beside the single writer (WAL): API reads run on these in parallel
    read_connections: int = Field(4, ge=0, le=64)


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # processes accepting API requests on the port (SO_REUSEPORT): the primary (ingest, roll-ups, alerts,
    # commands, and the API) plus api_workers - 1 API-only processes (docs/decisions/006-api-worker-processes.md)
    api_workers: int = Field(1, ge=1, le=32)
    # with api_workers > 1: false keeps API requests off the primary (ingest and the background jobs get its core);
    # the primary then listens on 127.0.0.1:primary_port only (0: a free port, logged)
    primary_api: bool = True
    primary_port: int = Field(0, ge=0, le=65535)
    # with api_workers > 1 and primary_api = false: the primary (ingest and the background jobs) lowers its CPU
    # priority by this much once its API workers are started, so that on a busy host people's requests go first
    # and ingest, seconds behind at most, catches up after (decision 041); 0 = the workers' priority
    primary_nice: int = Field(5, ge=0, le=19)


class IngestSettings(_Strict):
    future_tolerance_s: int = Field(120, ge=0)
    max_payload: int = Field(256 * 1024, ge=1024)
    batch_messages: int = Field(500, ge=1)
    # Units' keep-alive, for "online" when the broker state is stale: 3 x this without a message = offline.
    terminal_keepalive_s: int = Field(660, ge=10)
    # Per-unit budgets (docs/decisions/014-ingest-boundary.md). A real agent sends a batch a minute live and at
    # most link.backlog_rate (2) a second while it drains a backlog; these allow five times that. Over budget
    # the message is dropped unstored (the agent keeps it and sends it again later), counted, and the unit
    # flagged with a security alert. Per real minute, multiplied by the clock's speed for the simulator.
    unit_messages_per_minute: int = Field(600, ge=1)
    unit_bytes_per_minute: int = Field(8 * 1024 * 1024, ge=1024)
    unit_events_per_minute: int = Field(2000, ge=1)
    # what one unit may make the server store a day (samples + events, as stored); 0 = no limit
    unit_stored_bytes_per_day: int = Field(64 * 1024 * 1024, ge=0)
    # samples and events older than this (on the server's clock) are refused: nothing a real terminal
    # buffered can be older than its outbox, and dates from a reset RTC (1970, 1990) never count
    max_age_days: int = Field(400, ge=1)
    # /healthz and /readyz answer 503 when messages wait longer than this for a commit
    stall_s: float = Field(60.0, gt=0)
    event_retention_days: int = Field(180, ge=1)


class AvailabilitySettings(_Strict):
    threshold: float = Field(0.95, gt=0, le=1)
    rtt_ok_ms: int = Field(400, ge=1)
    critical_checks: list[str] = ["printer", "idcard", "modem", "storage"]
    service_hours: str | dict[str, str] = "08:00-18:00"
    # contract tiers: (floor, tier, final payment share) best first; below every floor -> last_tier
    tiers: list[tuple[float, int, float]] = [(0.95, 1, 0.60), (0.85, 2, 0.50)]
    last_tier: tuple[int, float] = (3, 0.40)
    # roll-ups: late data recounted after this quiet time; kept this long (a contract year and a margin)
    recount_debounce_s: float = Field(2.0, ge=0)
    rollup_keep_days: int = Field(400, ge=1)
    # on start, closed hours missed while the server was down are materialised back to at most this many days
    catchup_days: int = Field(14, ge=1)
    # every API-serving process computes the figures dashboards open with (last whole quarter, this month, by
    # county) at start and then this often, so no request waits for a first count (0: never)
    warm_figures_s: float = Field(60.0, ge=0)

    @field_validator("service_hours")
    @classmethod
    def _hours(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        from counting.hours import ServiceHours

        ServiceHours.parse(v)  # ValueError naming what is wrong: refused at start, not by every request later
        return v


class AnalyticsSettings(_Strict):
    latency_ok_ms: int = Field(400, ge=1)
    jitter_ok_ms: int = Field(50, ge=1)
    loss_ok: float = Field(1e-3, ge=0, le=1)
    window_h: int = Field(24, ge=1, le=24 * 31)
    sim_plan_mb: int = Field(500, ge=1)


class PressureSettings(_Strict):
    """Terminals' CPU, memory and storage pressure (issue 17): a ``pressure`` alert when every sample of a unit
    over the last ``window_minutes`` is at or above the share (and they cover the window); 0 turns a rule off.
    ``storage_pct`` warns before ``alerts.storage_pct`` (a file system full now, from the newest sample alone)."""

    window_minutes: int = Field(15, ge=1, le=24 * 60)
    cpu_pct: float = Field(90.0, ge=0, le=100)
    memory_pct: float = Field(90.0, ge=0, le=100)
    storage_pct: float = Field(85.0, ge=0, le=100)


class AlertSettings(_Strict):
    enabled: bool = True
    interval_s: float = Field(60.0, gt=0)
    offline_minutes: int = Field(30, ge=1)
    storage_pct: float = Field(90.0, gt=0, le=100)
    # correlated outage: at least this many units of one county with the link down in the same minute
    outage_min_units: int = Field(3, ge=2)
    # the same for one cell site (TAC + cell id): a village cell serves few terminals
    cell_outage_min_units: int = Field(2, ge=2)
    # an alert on counted figures (flagged) waits until the unit's data for the period has settled (nothing pending
    # recount, reported, not still delivering; server/availability Availability.unsettled) and the condition has
    # stood that long (wall seconds): a backlog or a history being published never raises (nor sends) an alert
    settle_s: float = Field(120.0, ge=0)
    pressure: PressureSettings = PressureSettings()
    webhook_url: str = ""
    webhook_retries: int = Field(5, ge=0, le=20)
    webhook_timeout_s: float = Field(5.0, gt=0)


class CommandSettings(_Strict):
    """Remote commands (server/commands): the signing key and how commands are queued and sent."""

    key_file: str = "command.key"  # Ed25519 (PKCS#8 PEM), made by `posfleet ca command-key`
    endorsement_file: str = "command.endorsement"  # the fleet CA's endorsement of that key
    default_expiry_s: int = Field(48 * 3600, ge=10)
    max_expiry_s: int = Field(30 * 86400, ge=10)
    max_pending_per_unit: int = Field(20, ge=1)
    large_fanout: int = Field(50, ge=1)  # more targets than this need "confirm": true
    resend_after_s: float = Field(120.0, gt=0)  # sent but no answer: send again
    max_sends: int = Field(6, ge=1)
    dispatch_interval_s: float = Field(5.0, gt=0)
    # reboots and shutdowns one unit may be sent an hour (the agent's own commands.reboots_per_hour is what
    # protects the terminal; this answers the operator at once with 429); 0 = refuse them all
    reboots_per_hour: int = Field(3, ge=0, le=100_000)
    packages_dir: str = "packages"
    # base URL terminals download packages from (empty: http://<http.host>:<http.port>)
    package_base_url: str = ""


class ReportScheduleSettings(_Strict):
    """Reports made on their own (server/reports/schedule.py): each period once, after its data is complete."""

    monthly: bool = False
    quarterly: bool = False
    # wait this long after the period's end (and until no hour of it awaits a recount) before making it
    delay_h: float = Field(6.0, ge=0, le=24 * 31)
    # ... but at most this long: then the report is made as counted, marked incomplete
    max_wait_h: float = Field(72.0, ge=0, le=24 * 62)
    formats: list[Literal["pdf", "xlsx", "csv", "html"]] = Field(["pdf", "xlsx"], min_length=1)
    interval_s: float = Field(300.0, gt=0)
    webhook_url: str = ""  # POSTed a JSON notice (period, files, their sha256 and download paths) per report

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (or empty)")
        return v


class ReportEmailSettings(_Strict):
    """SMTP delivery of scheduled reports. ``tls``: ``starttls`` (port 587), ``ssl`` (implicit TLS, port 465);
    plain SMTP is not offered: the reports name units and institutions."""

    to: list[str] = []  # empty: no e-mail
    sender: str = ""
    host: str = ""
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "ssl"] = "starttls"
    ca_file: str = ""  # the SMTP server's CA (empty: the system's trust store)
    user: str = ""
    password_file: str = ""  # the password in a file of its own (mode 600), never in this file
    timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _complete(self) -> ReportEmailSettings:
        if self.to:
            if not self.host:
                raise ValueError("host: needed when to is set (the SMTP server to deliver through)")
            if not self.sender:
                raise ValueError("sender: needed when to is set (the From address)")
            if self.user and not self.password_file:
                raise ValueError("password_file: needed when user is set")
        for a in [*self.to, *([self.sender] if self.sender else [])]:
            if "@" not in a or any(c in a for c in " \r\n,;<>"):
                raise ValueError(f"not an e-mail address: {a!r}")
        return self


class ReportSettings(_Strict):
    # the browser that prints the PDF report (server/reports/pdf.py): a path or a name on PATH;
    # empty looks up chromium, chromium-browser, google-chrome (Debian: chromium + fonts-wqy-microhei)
    chromium: str = ""
    pdf_timeout_s: float = Field(60.0, gt=0, le=600)
    # PDF prints at once per server process (each is a Chromium using up to both cores); more requests wait
    pdf_concurrency: int = Field(1, ge=1, le=16)
    # the document (issue 17): its cover and signature block say these; the tier table is [availability] tiers
    title: str = Field("运维服务报告", min_length=1, max_length=80)
    title_en: str = Field("Operations service report", min_length=1, max_length=120)
    client: str = Field("", max_length=120)  # 甲方 (party A), e.g. 海南省医疗保障局
    contractor: str = Field("", max_length=120)  # 乙方 (party B), the contractor paid on the figures
    contract_no: str = Field("", max_length=80)
    # report numbers: prefix + period, e.g. "HNYB-YW-" -> HNYB-YW-2026Q4 (a county report adds its county)
    number_prefix: str = Field("", max_length=40)
    # the contract's word for the network figure: 网络通畅率 (Hainan O&M contract) or as the contract says
    network_term: str = Field("网络通畅率", min_length=1, max_length=20)
    lang: Literal["zh", "en"] = "zh"
    # more terminals than this in scope: the PDF/HTML inspection appendix is made per county apart (XLSX keeps it)
    appendix_max_units: int = Field(3000, ge=0)
    # reports kept on the server (scheduled ones; listed and downloaded by the API and the dashboard)
    dir: str = "reports"
    # and their bytes in the database, so every server process serves them (several hosts: decision 029); a file
    # larger than this is kept in ``dir`` only, on the host that made it (0: none in the database, e.g. a shared dir)
    stored_max_mb: int = Field(256, ge=0, le=1000)
    schedule: ReportScheduleSettings = ReportScheduleSettings()
    email: ReportEmailSettings = ReportEmailSettings()


class ApiSettings(_Strict):
    """Limits on the HTTP API (docs/decisions/013-api-limits.md). Every API process keeps its own counts: with
    ``http.api_workers = N`` a client whose connections land on several processes gets up to N times these."""

    # per bearer token: sustained requests a second and the burst above it (token bucket); 0 = no limit
    rate_per_s: float = Field(20.0, ge=0)
    burst: int = Field(300, ge=1)
    # per client address, every request under /api/ and /dashboard/api/ whatever its token (several users
    # behind one NAT share it); 0 = no limit
    address_rate_per_s: float = Field(50.0, ge=0)
    address_burst: int = Field(600, ge=1)
    # this many requests refused 401 (missing, wrong or revoked token) from one address within
    # lockout_window_s lock that address out for lockout_s (429); 0 = never
    lockout_failures: int = Field(10, ge=0)
    lockout_window_s: float = Field(300.0, gt=0)
    lockout_s: float = Field(900.0, ge=1)
    # a registry unit list answered again for this long in each API process: a unit's live state (last seen,
    # online) on it may be this much older; a registry write shows at once (decision 038); 0 = answer every time
    list_cache_s: float = Field(5.0, ge=0, le=60)


class InspectionSettings(_Strict):
    """The server's self-inspection (server/inspection): how often it runs in the process running the alerts,
    and when it raises an alert (kinds ``server`` and ``certificate``)."""

    interval_s: float = Field(300.0, gt=0)
    disk_alert_pct: float = Field(90.0, gt=0, le=100)  # the e-invoice O&M's "disk usage below 90 %"
    cert_alert_days: int = Field(60, ge=1, le=3650)
    backup_alert_h: float = Field(48.0, ge=0)  # no backup recorded within this long: alert (0 = never)
    renewal_wait_days: float = Field(7.0, gt=0)  # a renewal request unsigned by the CA this long: alert


class PkiSettings(_Strict):
    """Where the fleet CA keeps what it issued (its ``index.json``: every terminal's certificate, read for their
    expiry dates) and the terminals' over-the-air certificate renewal (docs/decisions/026-certificate-renewal.md).
    The server never holds the CA key: ``posfleet ca sign-renewals`` on the CA's host signs what terminals asked."""

    ca_dir: str = ""  # e.g. /etc/posfleet/ca; empty: terminals' certificates are not inspected
    renewal: bool = True  # accept terminals' renewal requests (kept until the CA signs them)
    cert_days: int = Field(825, ge=1, le=3650)  # validity of a renewed terminal certificate


class MetricsSettings(_Strict):
    """Prometheus ``/metrics`` (docs/decisions/027-metrics-access.md): open without a token to the listed networks
    (a scraper on this host or the operators' monitoring network), a bearer token of any role from elsewhere."""

    enabled: bool = True
    open_to: list[str] = ["127.0.0.0/8", "::1/128"]

    @field_validator("open_to")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for i, net in enumerate(v):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as err:
                raise ValueError(f"item {i}: {net!r} is not a network (e.g. 10.0.0.0/8, ::1/128): {err}") from err
        return v


class ClockSettings(_Strict):
    speed: float = Field(1.0, gt=0)
    start: str = ""
    anchor: float = 0.0
    # simulator only: piecewise speed, [[simulated epoch s, speed], ...] (wire/clock.py)
    schedule: list[tuple[float, float]] = []
    # simulator only: the virtual time its lockstep player writes into this file (wire.clock.FileClock); speed
    # then only scales the real waits of pollers (the roll-up loop) and the per-unit ingest budgets
    file: str = ""


class AccessSettings(_Strict):
    """Network and business access applications (issue 18, server/access): the review steps an application goes
    through in order (``county``: a county administrator of the institution's county; ``province``: a province
    administrator); the last step's approval allocates the address (network) or grants the interface (business)."""

    steps: list[Literal["county", "province"]] = Field(["county", "province"], min_length=1, max_length=2)

    @field_validator("steps")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each step at most once")
        return v


class SecuritySettings(_Strict):
    """The sign-in lock-out and the suspicious behaviour alerted (issue 18; decision 031): each a ``security``
    alert (dashboard, webhooks). Exports and night commands are counted per caller over the last
    ``window_minutes``, in each API process's memory (with several API workers the count is per process)."""

    # failed sign-ins in a row (wrong password or code) that lock the account, and for how long; the lock raises
    # an alert
    signin_failures: int = Field(5, ge=1, le=100)
    signin_lock_minutes: float = Field(15.0, gt=0, le=7 * 24 * 60)
    # alert when an API token is used from an address other than the one it was last used from
    token_new_address: bool = True
    # alert when one caller exports more than this many rows (units or institutions, CSV or XLSX) within the
    # window; 0: never
    export_rows: int = Field(5000, ge=0)
    # alert when one caller sends commands to this many units or more within the window outside working_hours;
    # 0: never
    night_command_units: int = Field(50, ge=0)
    # the working week, in the fleet's time zone: "HH:MM-HH:MM" every day, or {"mon-fri": "08:00-19:00", ...}
    # (days not named are outside working hours: the weekend by default)
    working_hours: str | dict[str, str] = {"mon-fri": "08:00-19:00"}
    window_minutes: int = Field(60, ge=1, le=24 * 60)
    # a one-time password (a new user's, or one an administrator reset) is refused after this long unused
    temporary_password_hours: float = Field(72.0, gt=0, le=30 * 24)

    @field_validator("working_hours")
    @classmethod
    def _working(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        from counting.hours import ServiceHours

        ServiceHours.parse(v)  # ValueError naming what is wrong, at start
        return v


class Settings(_Strict):
    timezone: str = "Asia/Shanghai"
    retention_days: int = Field(14, ge=1)
    mqtt: MqttSettings = MqttSettings()
    storage: StorageSettings = StorageSettings()
    http: HttpSettings = HttpSettings()
    ingest: IngestSettings = IngestSettings()
    availability: AvailabilitySettings = AvailabilitySettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    alerts: AlertSettings = AlertSettings()
    clock: ClockSettings = ClockSettings()
    commands: CommandSettings = CommandSettings()
    reports: ReportSettings = ReportSettings()
    api: ApiSettings = ApiSettings()
    inspection: InspectionSettings = InspectionSettings()
    pki: PkiSettings = PkiSettings()
    metrics: MetricsSettings = MetricsSettings()
    access: AccessSettings = AccessSettings()
    security: SecuritySettings = SecuritySettings()
    ingest_enabled: bool = True
    base_dir: str = ""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {v!r}") from err
        return v

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p

    def share_group(self) -> str:
        """The ingest's shared-subscription group: ``mqtt.share_group``, or derived from the server's private key."""
        if self.mqtt.share_group:
            return self.mqtt.share_group
        import hashlib
        import hmac
        import secrets

        try:
            key = self.path(self.mqtt.key_file).read_bytes()
        except OSError:  # no key: this process cannot connect to the broker anyway
            return "g" + secrets.token_hex(16)
        return "g" + hmac.new(key, b"posfleet mqtt share group", hashlib.sha256).hexdigest()[:32]


class SettingsError(ValueError):
    """Bad server configuration; the message names the dotted field."""


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse(data: dict, base_dir: str = "") -> Settings:
    data = dict(data)
    data.setdefault("base_dir", base_dir)
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise SettingsError(_explain(err)) from err


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database file ``storage.url`` names (None for another backend)."""
    url = settings.storage.url
    if not url.startswith("sqlite:///"):
        return None
    return settings.path(url[len("sqlite:///"):])


def _writable_place(setting: str, path: Path, problems: list, what: str) -> None:
    """``path`` (a file to be created or written, with files beside it) can be written by this user."""
    import os

    from wire.pemfiles import Problem, running_user

    user = running_user()
    if path.exists():
        if path.is_dir():
            problems.append(Problem(setting, str(path), f"is a folder, not the {what}"))
            return
        if not os.access(path, os.R_OK | os.W_OK):
            problems.append(Problem(setting, str(path), f"the {what} cannot be read and written by user {user}"))
            return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # missing folders are made at start: the nearest existing one must take them
    if not folder.is_dir():
        problems.append(Problem(setting, str(path), f"{folder} is not a folder"))
    elif not os.access(folder, os.W_OK | os.X_OK):
        problems.append(Problem(setting, str(path), f"folder {folder} is not writable by user {user} (the {what} "
                                                    "and its -wal and -shm files are made there)"))


def check_files(settings: Settings, now: float | None = None, listen: bool = False) -> list:
    """Every file the settings name, checked as the server will use it (``wire.pemfiles.Problem`` s; fatal ones
    stop the server before it starts). ``listen``: also try to bind ``http.host:http.port``."""
    from wire import pemfiles
    from wire.pemfiles import Problem

    problems: list[Problem] = []
    m = settings.mqtt
    if settings.ingest_enabled:
        pemfiles.certificates("mqtt.ca_file", settings.path(m.ca_file), problems, now, "CA certificate")
        pemfiles.cert_and_key("mqtt", "cert_file", settings.path(m.cert_file), "key_file", settings.path(m.key_file),
                              problems, now)
    db = sqlite_path(settings)
    if db is None and settings.storage.url.startswith(("postgresql://", "postgres://")):
        from .storage.postgres import check_database

        said = check_database(settings.storage.url)
        if said:
            problems.append(Problem("storage.url", said[0], said[1]))
    elif db is None:
        problems.append(Problem("storage.url", "", f"unsupported backend in {settings.storage.url!r} (supported: "
                                                   "sqlite:///PATH, postgresql://USER@HOST:PORT/DB)"))
    else:
        _writable_place("storage.url", db, problems, "database")
        from .storage.sqlite import too_new

        try:
            newer = too_new(db)
        except Exception as err:  # noqa: BLE001 - not a database at all, locked, unreadable: say so
            newer = f"cannot read its schema version: {err}"
        if newer:
            problems.append(Problem("storage.url", str(db), newer))
    c = settings.commands
    key, endo = settings.path(c.key_file), settings.path(c.endorsement_file)
    if not c.key_file or (not key.exists() and not key.is_symlink() and not endo.exists()):
        problems.append(Problem("commands.key_file", str(key) if c.key_file else "",
                                "no command-signing key: remote commands and software updates are refused (HTTP 503) "
                                "until it is there (posfleet ca command-key, then restart)", fatal=False))
    else:
        from .commands.keys import SigningKeyError, load_key

        for setting, path in (("commands.key_file", key), ("commands.endorsement_file", endo)):
            pemfiles.read_file(setting, path, problems)
        if not any(p.setting.startswith("commands.") for p in problems):
            try:
                signing = load_key(key, endo)
            except SigningKeyError as err:
                text = str(err)
                setting = "commands.endorsement_file" if text.startswith(str(endo)) else "commands.key_file"
                path = endo if setting == "commands.endorsement_file" else key
                problems.append(Problem(setting, str(path), text.removeprefix(f"{path}: ")))
            else:
                import time

                t = time.time() if now is None else now
                if signing.not_after < t:
                    problems.append(Problem("commands.endorsement_file", str(endo), f"the endorsement of key "
                                            f"{signing.key_id} has expired: make a new key (posfleet ca command-key)"))
    if settings.pki.ca_dir:  # the self-inspection reads every terminal certificate's end there (not fatal)
        index = settings.path(settings.pki.ca_dir) / "index.json"
        try:
            index.read_bytes()
        except OSError as err:
            problems.append(Problem("pki.ca_dir", str(index), f"cannot read the CA's index: {err.strerror or err} "
                                    "(terminal certificates are not inspected)", fatal=False))
    if listen and settings.http.port:
        import socket

        host, port = settings.http.host, settings.http.port
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as err:
            problems.append(Problem("http.port", "", f"cannot listen on {host}:{port}: {err.strerror or err}"))
    return problems


def load(path: str | Path) -> Settings:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"{p}: cannot read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{p}: not valid TOML: {err}") from err
    try:
        return parse(data, str(p.parent.resolve()))
    except SettingsError as err:
        raise SettingsError(f"{p}: {err}") from err


Role = Literal["admin", "engineer", "viewer"]
