"""Agent configuration: one TOML file, validated at start.

Unknown keys and bad values are refused with the dotted path of what is wrong
(``link.port: Expected `int`, got `str```). Secrets are never part of ``repr`` or logs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from drivers.profiles import dotted_error


class ConfigError(ValueError):
    """The configuration file is missing, malformed or invalid; the message names the field."""


class Secret(str):
    """A string that does not show itself in repr or logs."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class LinkConfig(_Base):
    host: str = "localhost"
    port: int = 8883
    ca_file: str = "ca.pem"
    cert_file: str = "terminal.pem"
    key_file: str = "terminal.key"
    key_passphrase: str = ""
    # MQTT keep-alive: the broker declares the unit gone after 1.5 x this without traffic.
    keepalive_s: int = 660
    # Telemetry is sent in batches: when the oldest unsent sample is this old (checked at each
    # sample), and at once when a check changes state, a command result is ready or the link comes
    # back. Keep it below keepalive_s: then the batches themselves keep the MQTT session alive and no
    # PINGREQ is ever sent.
    batch_interval_s: int = 600
    max_batch: int = 60
    # Backlog upload after an outage: batches per second, so business traffic is not starved.
    backlog_rate: float = 2.0
    # No server acknowledgement within this time: send the batch again.
    ack_timeout_s: int = 90
    reconnect_min_s: float = 5.0
    reconnect_max_s: float = 600.0
    # Measure the round trip in every sample slot with an empty QoS 1 probe (about 200 B a probe:
    # 8 MB a month at one a minute, so off by default; the simulator turns it on).
    probe_every_sample: bool = False
    tls_min_version: str = "1.2"
    # The cellular interface (e.g. "wwan0"): its byte counters are the SIM's data use when the modem
    # model has no counter command.
    data_interface: str = ""


class SamplingConfig(_Base):
    interval_s: int = 60
    # Checks whose fault makes the unit "not intact" is decided by the server; the agent only reports.


class OutboxConfig(_Base):
    max_mb: float = 50.0
    memory_fallback: int = 1440  # samples kept in memory while the disk cannot be written


class StorageConfig(_Base):
    critical_fill_pct: float = 95.0
    mounts: list[str] = []


class ComponentSource(_Base):
    file: str = ""
    command: list[str] = []
    pattern: str = ""  # optional regex; group 1 (or the whole match) is the version


class PeripheralConfig(_Base):
    port: str
    profile: str
    baud: int | None = None
    enabled: bool = True


class PeripheralsConfig(_Base):
    modem: PeripheralConfig | None = None
    printer: PeripheralConfig | None = None
    idcard: PeripheralConfig | None = None


class ClockConfig(_Base):
    trust_ntp: bool = True
    # For the simulator only: a clock that runs `speed` times faster than real time, starting at
    # `start` (ISO 8601) at the real instant `anchor` (epoch seconds).
    speed: float = 1.0
    start: str = ""
    anchor: float = 0.0
    # piecewise speed: [[simulated epoch s, speed], ...], each in effect from that instant (wire/clock.py)
    schedule: list[tuple[float, float]] = []


class ConsoleConfig(_Base):
    """The engineers' diagnostic console on a serial/USB gadget port (see agent/console/)."""

    port: str
    baud: int = 115200
    idle_minutes: float = 10
    # CA certificate that endorses engineer credentials (the fleet CA's) and the revocation list.
    engineer_ca_file: str = "ca.pem"
    revoked_file: str = ""
    # Revoked credential ids, delivered with the configuration updates (set_config
    # {"console.revoked": [...]}, the whole list each time); refused as well as those in revoked_file.
    revoked: list[str] = []
    # The terminal's county: a changing command needs a credential whose scope names it.
    county: str = ""
    # Largest reply the console sends for one command (bytes of JSON before framing).
    max_reply_bytes: int = 65536


class CommandsConfig(_Base):
    """Remote commands (signed by a key the fleet CA endorsed; see wire/commands.py)."""

    enabled: bool = True
    allowed: list[str] = []  # empty: every known type
    reboot_command: list[str] = msgspec.field(default_factory=lambda: ["systemctl", "reboot"])
    shutdown_command: list[str] = msgspec.field(default_factory=lambda: ["systemctl", "poweroff"])
    revoked_keys: list[str] = []
    # set_config: a change that loses the link to the server is rolled back after this long.
    rollback_minutes: float = 10.0
    # At most this many reboots and shutdowns (together) run in any hour; more are refused as rate_limited, so
    # neither a server bug nor a replay can reboot-loop a clinic's terminal (0: none run remotely).
    reboots_per_hour: int = 3
    max_output: int = 16384


class RenewalConfig(_Base):
    """The terminal certificate's renewal over the air (agent/renew.py, decision 026)."""

    enabled: bool = True
    days_before: float = 60.0  # renew when the certificate in use has fewer days than this left
    resend_h: float = 24.0  # no certificate back after this long: ask again (and after a failed switch)
    switch_timeout_s: float = 900.0  # no connection with the new certificate within this: the old one back


class TerminalAppConfig(_Base):
    """The terminal application's files the agent reads (issue 18; agent/appwatch.py, docs/agent.md "The terminal
    application's files"): set per model by the model's configuration. Empty: not read."""

    events_file: str = ""  # JSON lines: one per service or identity check (counted per hour, never sent as is)
    status_file: str = ""  # JSON: per business interface, whether the last attempt reached it
    interfaces: list[str] = []  # the interface codes to report from status_file
    wired_interface: str = ""  # e.g. "eth0": its IPv4 address is reported when it changes
    cellular_interface: str = ""  # e.g. "wwan0" or "ppp0" (4G VPDN)


class LogConfig(_Base):
    level: str = "INFO"


class AgentConfig(_Base):
    sn: str = ""
    data_dir: str = "/var/lib/posfleet"
    link: LinkConfig = msgspec.field(default_factory=LinkConfig)
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    components: dict[str, ComponentSource] = {}
    peripherals: PeripheralsConfig = msgspec.field(default_factory=PeripheralsConfig)
    clock: ClockConfig = msgspec.field(default_factory=ClockConfig)
    console: ConsoleConfig | None = None
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    renewal: RenewalConfig = msgspec.field(default_factory=RenewalConfig)
    # Where this boot's id is read from (the simulator gives each emulated terminal its own).
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    terminal_app: TerminalAppConfig = msgspec.field(default_factory=TerminalAppConfig)
    base_dir: str = ""  # set by load(): relative paths are relative to the config file

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p

    def redacted(self) -> dict[str, object]:
        """The configuration as a dict with secrets hidden (for `config show`)."""
        def hide(obj: object) -> object:
            if isinstance(obj, Secret):
                return "***" if obj else ""
            raise TypeError(f"cannot show {type(obj).__name__}")

        return msgspec.to_builtins(self, enc_hook=hide)  # type: ignore[no-any-return]


def _check(cfg: AgentConfig) -> None:
    from wire.topics import valid_sn

    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{field}: {why}")

    if cfg.sn and not valid_sn(cfg.sn):
        raise bad("sn", f"{cfg.sn!r} is not a valid terminal SN (letters, digits, - and _; 3-32 chars)")
    if not 1 <= cfg.link.port <= 65535:
        raise bad("link.port", f"{cfg.link.port} is not a TCP port")
    if cfg.link.tls_min_version not in ("1.2", "1.3"):
        raise bad("link.tls_min_version", "must be \"1.2\" or \"1.3\"")
    if not 10 <= cfg.link.keepalive_s <= 3600:
        raise bad("link.keepalive_s", "must be between 10 and 3600")
    if cfg.link.batch_interval_s < 0:
        raise bad("link.batch_interval_s", "must not be negative")
    if not 1 <= cfg.link.max_batch <= 1000:
        raise bad("link.max_batch", "must be between 1 and 1000")
    if cfg.link.backlog_rate <= 0:
        raise bad("link.backlog_rate", "must be positive")
    if cfg.link.reconnect_min_s <= 0 or cfg.link.reconnect_max_s < cfg.link.reconnect_min_s:
        raise bad("link.reconnect_max_s", "must be >= reconnect_min_s > 0")
    if not 5 <= cfg.sampling.interval_s <= 3600 or 60 % cfg.sampling.interval_s and cfg.sampling.interval_s % 60:
        raise bad("sampling.interval_s", "must be 5..3600 s and divide or be a multiple of 60")
    if cfg.outbox.max_mb < 1:
        raise bad("outbox.max_mb", "must be at least 1")
    if not 50 <= cfg.storage.critical_fill_pct <= 100:
        raise bad("storage.critical_fill_pct", "must be between 50 and 100")
    if cfg.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("log.level", "must be DEBUG, INFO, WARNING or ERROR")
    if cfg.clock.speed <= 0:
        raise bad("clock.speed", "must be positive")
    if not 0 <= cfg.commands.reboots_per_hour <= 60:
        raise bad("commands.reboots_per_hour", "must be between 0 and 60")
    if not 0 < cfg.renewal.days_before <= 3650:
        raise bad("renewal.days_before", "must be between 0 and 3650 days")
    if cfg.renewal.resend_h <= 0:
        raise bad("renewal.resend_h", "must be positive")
    if cfg.renewal.switch_timeout_s < 10:
        raise bad("renewal.switch_timeout_s", "must be at least 10 s")
    from wire.commands import TYPES

    for i, t in enumerate(cfg.commands.allowed):
        if t not in TYPES:
            raise bad(f"commands.allowed[{i}]", f"unknown command type {t!r} (known: {', '.join(sorted(TYPES))})")
    for name, src in cfg.components.items():
        if bool(src.file) == bool(src.command):
            raise bad(f"components.{name}", "give exactly one of file or command")
    for kind in ("modem", "printer", "idcard"):
        p = getattr(cfg.peripherals, kind)
        if p is not None and p.baud is not None and p.baud not in (9600, 19200, 38400, 57600, 115200, 230400, 460800):
            raise bad(f"peripherals.{kind}.baud", f"{p.baud} is not a standard baud rate")


def parse(text: str, base_dir: str = "") -> AgentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}") from err
    data.setdefault("base_dir", base_dir)
    try:
        cfg = msgspec.convert(data, AgentConfig, strict=True)
    except msgspec.ValidationError as err:
        raise ConfigError(dotted_error(str(err))) from err
    _check(cfg)
    cfg.link.key_passphrase = Secret(cfg.link.key_passphrase)
    return cfg


def check_files(cfg: AgentConfig, now: float | None = None, running: bool = False) -> list:
    """Every file the configuration names, checked as the agent will use it (``wire.pemfiles.Problem`` s: fatal
    ones stop ``agent run`` and fail ``agent check-config``, both with exit 2).

    ``running`` (``agent run``): an expired certificate is a loud warning, not a reason to stop. The broker will
    refuse it (or this terminal's clock is ahead, which agent/tls.py copes with), but the agent keeps sampling into
    its outbox for when the certificate is renewed, and the diagnostic console's ``reenrol`` needs it running."""
    import os

    from wire import pemfiles
    from wire.pemfiles import Problem

    problems: list[Problem] = []
    link = cfg.link
    pemfiles.certificates("link.ca_file", cfg.path(link.ca_file), problems, now, "CA certificate",
                          expired_fatal=not running)
    certs = pemfiles.cert_and_key("link", "cert_file", cfg.path(link.cert_file), "key_file", cfg.path(link.key_file),
                                  problems, now, str(link.key_passphrase), "key_passphrase", expired_fatal=not running)
    if certs and cfg.sn:
        from cryptography.x509.oid import NameOID

        cn = [a.value for a in certs[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cn and cn[0] != cfg.sn:
            problems.append(Problem("sn", str(cfg.path(link.cert_file)), f"{cfg.sn!r} but link.cert_file is issued to "
                                    f"{cn[0]!r}: the broker knows this terminal by the certificate's name, and refuses "
                                    "what it publishes under another", fatal=False))
    if cfg.console is not None:
        pemfiles.certificates("console.engineer_ca_file", cfg.path(cfg.console.engineer_ca_file), problems, now,
                              "CA certificate", expired_fatal=not running)
        if cfg.console.revoked_file:
            pemfiles.read_file("console.revoked_file", cfg.path(cfg.console.revoked_file), problems)
    data = cfg.path(cfg.data_dir)
    folder = data
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        problems.append(Problem("data_dir", str(data), f"{folder} is not a folder"))
    elif not os.access(folder, os.W_OK | os.X_OK):
        problems.append(Problem("data_dir", str(data), f"{'folder' if folder == data else f'folder {folder}'} is not "
                                f"writable by user {pemfiles.running_user()}: samples are held in memory only "
                                f"({cfg.outbox.memory_fallback} at most) and lost at a restart", fatal=False))
    return problems


def load(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read: {err.strerror}") from err
    try:
        return parse(text, str(p.parent.resolve()))
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from err
