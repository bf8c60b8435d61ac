"""The agent's MQTT link: the one module that owns the paho client.

Mutual TLS (1.2 minimum) with the terminal's own certificate, MQTT v5, a retained
online/offline state with a last will, reconnects with full-jitter exponential backoff
(so 3,000 terminals do not come back in step after a carrier outage), TLS session
resumption (a resumed handshake costs about half a full one on the cellular link), and
round trips measured from PUBLISH to PUBACK on traffic that is sent anyway.

The broker certificate's dates are checked against the terminal's best known time; while its clock is unchecked
and wrong, against the time the server vouches for in its first acknowledgement (agent/tls.py).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from wire import codec, topics
from wire.messages import Ack, State

from .netq import TcpInfo, tcp_info
from .tls import DATE_ERRORS, AgentContext, agent_context

log = logging.getLogger(__name__)

#: while waiting for the server's time on a new connection, the online state is published again this often
AWAIT_TIME_HELLO_S = 20.0


def backoff_delay(failures: int, low: float, high: float, rng: random.Random) -> float:
    """Jittered exponential backoff: uniform in [low, min(high, low * 2**(failures+1))].

    Even the first retry after a drop is spread over [low, 2*low], so units that lost the
    link in the same second do not come back in the same second."""
    cap = min(high, low * (2 ** min(failures + 1, 16)))
    return rng.uniform(low, max(low, cap))


def tls_context(ca_file: Path, cert_file: Path, key_file: Path, passphrase: str = "", min_version: str = "1.2") -> ssl.SSLContext:
    ctx = agent_context(ca_file, cert_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=str(ca_file))
    try:
        # a callable, never None: with None OpenSSL would prompt for the passphrase on the terminal
        ctx.load_cert_chain(str(cert_file), str(key_file), password=lambda: passphrase)
    except ssl.SSLError as err:
        from .config import ConfigError

        try:
            encrypted = b"ENCRYPTED" in Path(key_file).read_bytes()
        except OSError:
            encrypted = False
        if encrypted:  # never echo the passphrase itself
            raise ConfigError(f"link.key_passphrase: cannot decrypt {key_file} ("
                              + ("wrong passphrase" if passphrase else "the key is encrypted and no passphrase is set")
                              + ")") from err
        raise ConfigError(f"link.cert_file: {cert_file} and link.key_file {key_file} cannot be loaded together "
                          f"({err.reason or err})") from err
    return ctx


class Link:
    def __init__(
        self,
        sn: str,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        keepalive: int = 660,
        reconnect_min: float = 5.0,
        reconnect_max: float = 600.0,
        version: str = "",
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        on_rtt: Callable[[float], None] | None = None,
        on_retained: Callable[[str, bytes], None] | None = None,
        on_refused: Callable[[str, int, str], None] | None = None,
        rng: random.Random | None = None,
        best_time: Callable[[], float | None] | None = None,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float, threading.Event], bool] | None = None,
    ) -> None:
        self.sn = sn
        self.host, self.port = host, port
        self.keepalive = keepalive
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.version = version
        self._ctx = context
        # best_time: the terminal's time once its clock is checked, None while not; given, the broker certificate's
        # dates are checked against it, and deferred to the server's time while the clock is unchecked (agent/tls.py)
        if best_time is not None and isinstance(context, AgentContext):
            context.best_time = best_time
        self._now = now
        # durations (round trips, backoff, the hello's repeat) on the agent's clock: real in the field, virtual in
        # the simulator's lockstep player; paho's keep-alive keeps its own real clock
        self._mono = monotonic
        self._wait = wait or (lambda seconds, stop: stop.wait(seconds))
        self.next_attempt = 0.0  # external driving: the monotonic time of the next connection attempt
        self._external = False
        self._started = 0.0  # monotonic time the current connection was made
        self._resumed_saved = False
        self._awaiting_time = False  # connected, the certificate's dates wait for the server's time
        self._awaiting_since = 0.0
        self._held: list[mqtt.MQTTMessage] = []  # what arrived meanwhile: acted on once the dates are checked
        self.dates_refused = 0  # connections dropped: the broker certificate not valid at the server's time
        self._on_connect, self._on_disconnect = on_connect, on_disconnect
        self._on_message, self._on_rtt = on_message, on_rtt
        self._on_retained, self._on_refused = on_retained, on_refused
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._sent_at: dict[int, tuple[float, str]] = {}  # mid -> (monotonic send time, topic kind)
        self._lock = threading.Lock()
        self.failures = 0
        self.last_error = ""
        self.connects = 0
        self.retained_ignored = 0  # retained messages on our ack/command topics, never acted on
        self.refused: dict[int, int] = {}  # PUBACK failure reason code -> publishes the broker refused

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sn, protocol=mqtt.MQTTv5)
        c.tls_set_context(context)
        c.will_set(topics.topic(sn, topics.STATE), codec.encode(State(online=False, reason="lost")), qos=1, retain=True)
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(200)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        c.on_publish = self._handle_publish
        # Only the link thread may touch the TLS socket. Without an external-loop callback, paho's
        # publish() from any other thread (the agent's, the command worker's) calls loop_write()
        # itself, so two threads write one SSL object: corrupted records ("bad record mac") and, once
        # seen, heap corruption. With the callback set, publish() only queues and wakes loop().
        c.on_socket_register_write = lambda client, userdata, sock: None
        self._client = c

    # lifecycle --------------------------------------------------------------------
    def start(self, initial_delay: float = 0.0) -> None:
        self._thread = threading.Thread(target=self._run, args=(initial_delay,), name="mqtt-link", daemon=True)
        self._thread.start()

    def start_external(self, initial_delay: float = 0.0) -> None:
        """No thread: whoever drives the agent calls :meth:`due`, :meth:`attempt`, paho's ``loop_read`` /
        ``loop_write`` on :meth:`socket`, :meth:`housekeeping` and :meth:`lost` (simulator/vworker.py), the same
        steps the field's thread takes in :meth:`_run`."""
        self._external = True
        self.next_attempt = self._mono() + initial_delay

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye (retained offline state) and disconnect."""
        if self._external:
            self._stop_external()
            return
        if self._connected.is_set():
            try:
                info = self._client.publish(
                    topics.topic(self.sn, topics.STATE), codec.encode(State(online=False, reason="shutdown")),
                    qos=1, retain=True,
                )
                info.wait_for_publish(2.0)  # a condition wait (time.sleep fails under libfaketime's monotonic clock)
            except (ValueError, RuntimeError):
                pass
            self._client.disconnect()
        elif self._awaiting_time:
            self._client.disconnect()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def reconnect(self) -> None:
        """End the connection so that the next one is made (after the usual backoff) with the TLS context as it is
        now: a renewed certificate (agent/renew.py). Nothing is lost: what was not acknowledged is sent again."""
        if self._connected.is_set() or self._awaiting_time:
            self._client.disconnect()

    def socket(self):  # type: ignore[no-untyped-def]
        """The connection's socket (an SSLSocket), None while not connected: for an external loop."""
        return self._client.socket()

    @property
    def client(self) -> mqtt.Client:
        return self._client

    def abort(self, timeout: float = 5.0) -> None:
        """Drop the connection the way a power cut does: no goodbye, no DISCONNECT (the broker publishes the
        will). The TCP connection is shut down under paho, which the link thread sees as a lost connection;
        used by the simulator's agent host to cut the power of one agent among many in one process."""
        self._stop.set()
        sock = self._client.socket()
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket, not SSLSocket.shutdown
            except (OSError, TypeError):
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._external:
            self._client.loop_read()  # sees the shutdown: paho closes the socket
            self._handle_disconnect(self._client, None, None, "aborted", None)

    def _stop_external(self) -> None:
        """stop() without a thread: the goodbye and DISCONNECT are queued and written here (blocking writes on
        the loopback; the broker's answers are not awaited)."""
        self._stop.set()
        c = self._client
        if self._connected.is_set() or self._awaiting_time:
            if self._connected.is_set():
                c.publish(topics.topic(self.sn, topics.STATE),
                          codec.encode(State(online=False, reason="shutdown")), qos=1, retain=True)
            c.disconnect()
            sock = c.socket()
            if sock is not None:
                deadline = time.monotonic() + 2.0
                while c.want_write() and c.socket() is not None and time.monotonic() < deadline:
                    if c.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
        self._handle_disconnect(c, None, None, "stopped", None)
        sock = c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def tcp_info(self) -> TcpInfo | None:
        sock = self._client.socket()
        return tcp_info(sock) if sock is not None else None  # type: ignore[arg-type]

    # sending ------------------------------------------------------------------------
    def publish(self, kind: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a publish; False when the link is down (nothing queued)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topics.topic(self.sn, kind), payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._note_sent()
        if qos:
            with self._lock:
                self._sent_at[info.mid] = (self._mono(), kind)
        return True

    def _note_sent(self) -> None:
        """Count our publish as traffic for the keep-alive timer.

        paho-mqtt 2.2's ``_packet_write`` returns when its queue empties, before it records the
        time of the last packet sent, so only its own PINGREQs reset the timer and it pings every
        ``keepalive`` seconds whatever else is sent (eclipse-paho/paho.mqtt.python#813): about a
        quarter of the monthly bytes. The batches keep the session alive; tell paho so."""
        client = self._client
        mutex = getattr(client, "_msgtime_mutex", None)
        if mutex is not None and hasattr(client, "_last_msg_out"):
            with mutex:
                client._last_msg_out = time.monotonic()

    def probe(self) -> bool:
        """An empty QoS 1 publish that nobody receives: its PUBACK times the round trip."""
        return self.publish(topics.PROBE, b"", qos=1)

    # paho callbacks -------------------------------------------------------------------
    def _handle_connect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self.last_error = f"broker refused: {reason_code}"
            log.warning("broker refused the connection: %s", reason_code)
            return
        client.subscribe([(topics.topic(self.sn, topics.ACK), 0), (topics.topic(self.sn, topics.COMMAND), 1),
                          (topics.topic(self.sn, topics.CERT), 1)])
        self._hello(client)
        if isinstance(self._ctx, AgentContext) and self._ctx.pending is not None:
            # the server answers the online state with its time: until then nothing else is sent or acted on
            self._awaiting_time = True
            self._awaiting_since = self._mono()
            self._held.clear()
            log.info("connected to %s:%d; waiting for the server's time to check the broker certificate's dates",
                     self.host, self.port)
            return
        self._up()

    def _hello(self, client: mqtt.Client) -> None:
        client.publish(
            topics.topic(self.sn, topics.STATE),
            codec.encode(State(online=True, ts=int(self._now()), version=self.version)), qos=1, retain=True,
        )

    def _up(self) -> None:
        self.connects += 1
        self.failures = 0
        self._connected.set()
        log.info("connected to %s:%d", self.host, self.port)
        if self._on_connect:
            self._on_connect()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._awaiting_time = False
        self._held.clear()
        was = self._connected.is_set()
        self._connected.clear()
        with self._lock:
            self._sent_at.clear()
        if was:
            log.info("disconnected: %s", reason_code)
            if self._on_disconnect:
                self._on_disconnect(str(reason_code))

    def _handle_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        parsed = topics.parse(msg.topic)
        if not parsed or parsed[0] != self.sn:
            return
        if self._awaiting_time:
            if parsed[1] == topics.ACK and not msg.retain:  # a retained acknowledgement's time is an old one
                self._vouched(client, msg)
            elif len(self._held) < 200:
                self._held.append(msg)
            return
        self._dispatch(parsed, msg)

    def _vouched(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """The server's first acknowledgement on a connection whose certificate dates wait for its time."""
        try:
            server_time = codec.decode(msg.payload, Ack).time_ms / 1000
        except codec.DecodeError as err:
            log.warning("ignored an acknowledgement while waiting for the server's time: %s", err)
            return
        assert isinstance(self._ctx, AgentContext)
        problem = self._ctx.vouched(server_time)
        self._awaiting_time = False
        held, self._held = self._held, []
        if problem is not None:
            self.dates_refused += 1
            self.last_error = f"broker certificate refused: {problem}"
            self._ctx.saved_session = None
            log.error("disconnecting from %s:%d: %s; the server's time is not adopted and nothing is sent (the "
                      "clock stays unchecked, samples stay held); check the broker certificate and this terminal's "
                      "clock", self.host, self.port, problem)
            client.disconnect()
            return
        log.info("broker certificate valid at the server's time %s", time.strftime("%Y-%m-%d %H:%M:%SZ",
                                                                                  time.gmtime(server_time)))
        self._ctx.defer_dates = False
        self._up()
        for m in [msg, *held]:
            parsed = topics.parse(m.topic)
            if parsed:
                self._dispatch(parsed, m)

    def _dispatch(self, parsed: tuple[str, str], msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            # The retain flag is set only on a message the broker kept and hands to every new subscription: a
            # command (or an acknowledgement, with its old server time) that would be acted on again at every
            # reconnect. The server never retains what it sends; whoever did is not to be obeyed.
            self.retained_ignored += 1
            if self._on_retained:
                self._on_retained(parsed[1], msg.payload)
            return
        if self._on_message:
            self._on_message(parsed[1], msg.payload)

    def _handle_publish(self, client, userdata, mid: int, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            sent = self._sent_at.pop(mid, None)
        if isinstance(reason_code, ReasonCode) and reason_code.is_failure:
            # MQTT 5: the broker did not take it (0x87 not authorised, 0x97 quota exceeded, ...). Not a
            # delivery (the rows stay in the outbox), and not a round trip of the path the data takes
            code = int(reason_code.value)
            self.refused[code] = self.refused.get(code, 0) + 1
            if self._on_refused:
                self._on_refused(sent[1] if sent else "?", code, str(reason_code))
            return
        if sent is not None and self._on_rtt:
            self._on_rtt((self._mono() - sent[0]) * 1000.0)

    # the network thread -------------------------------------------------------------------
    def _backoff(self) -> float:
        return backoff_delay(self.failures, self.reconnect_min, self.reconnect_max, self._rng)

    def attempt(self) -> bool | None:
        """One connection attempt: True connected (TCP and TLS up, CONNECT sent), False failed (the next attempt
        after the backoff, :attr:`next_attempt`), None: again at once (the dates deferred to the server's time)."""
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=True)
        except (OSError, ssl.SSLError, ValueError) as err:
            if self._dates_only(err):
                return None
            self.failures += 1
            self.last_error = f"connect failed: {err}"
            log.info("connect to %s:%d failed (%s); attempt %d", self.host, self.port, err, self.failures)
            self.next_attempt = self._mono() + self._backoff()
            return False
        self._resumed_saved = False
        self._started = self._mono()
        return True

    def housekeeping(self) -> None:
        """Between network rounds of a connection: keep the TLS session once connected, and ask for the server's
        time again when its answer is overdue."""
        if not self._resumed_saved and self._connected.is_set() and self._mono() - self._started > 1.0:
            self._resumed_saved = self._save_session()
        if self._awaiting_time and self._mono() - self._awaiting_since > AWAIT_TIME_HELLO_S:
            # the server's time (a QoS 0 acknowledgement) was lost, or the server was down: ask again
            self._awaiting_since = self._mono()
            self._hello(self._client)

    def lost(self) -> None:
        """The connection ended (its loop failed): say so, count a failure when it was short, and set the next
        attempt after the backoff."""
        self._handle_disconnect(self._client, None, None, "connection lost", None)
        if self.connects == 0 or self._mono() - self._started < 10:
            self.failures += 1
        self.next_attempt = self._mono() + self._backoff()

    def due(self) -> bool:
        """External driving: not connected and the next attempt is due."""
        return not self._stop.is_set() and self._client.socket() is None and self._mono() >= self.next_attempt

    def _run(self, initial_delay: float) -> None:
        if initial_delay and self._wait(initial_delay, self._stop):
            return
        while not self._stop.is_set():
            up = self.attempt()
            if up is None:
                continue  # again at once, the dates deferred to the server's time
            if not up:
                if self._wait(self.next_attempt - self._mono(), self._stop):
                    return
                continue
            while not self._stop.is_set():
                # a publish from the agent's thread wakes this select through paho's socket pair, a stop()
                # through its DISCONNECT and an abort() through the socket's shutdown: the timeout only paces
                # paho's keep-alive bookkeeping and the session save below (it was 0.2 s: idle wake-ups)
                rc = self._client.loop(timeout=1.0)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self.housekeeping()
            if self._stop.is_set():
                self._handle_disconnect(self._client, None, None, "connection lost", None)
                break
            self.lost()
            if self._wait(self.next_attempt - self._mono(), self._stop):
                break
        try:
            self._client.loop(timeout=0.1)
        except (OSError, ValueError):
            pass

    def _dates_only(self, err: BaseException) -> bool:
        """OpenSSL refused the broker certificate for its dates alone while this terminal's clock is unchecked:
        defer the date check of the next handshake to the server's time (True: try again now)."""
        ctx = self._ctx
        if (not isinstance(ctx, AgentContext) or ctx.best_time is None or ctx.defer_dates
                or not isinstance(err, ssl.SSLCertVerificationError) or err.verify_code not in DATE_ERRORS
                or ctx.best_time() is not None):
            return False
        ctx.defer_dates = True
        self.last_error = f"connect failed: {err}"
        log.warning("the broker certificate is not valid by this terminal's unchecked clock (%s): connecting with "
                    "its dates to be checked against the server's time", err.verify_message)
        return True

    def _save_session(self) -> bool:
        sock = self._client.socket()
        session = getattr(sock, "session", None)
        if session is not None and isinstance(self._ctx, AgentContext):
            self._ctx.saved_session = session
            return True
        return False
