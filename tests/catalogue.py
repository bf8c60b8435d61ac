"""The reliability catalogue (../shared/reference/reliability-catalogue.md, issue 12) mapped onto this test suite.

One entry per catalogue ID: the tests that exercise it (``path::function`` node ids, a function at the top level
of the file or inside a class: ``path::Class::function``), the figure those tests really assert, and a status:

* ``full``: the tests assert the catalogue's pass figure;
* ``weaker``: they assert a weaker figure; ``why`` says which part is missing and why (the 20-minute suite's time
  budget, hardware such as relay power cuts, tc netem, EMQX or PostgreSQL not adopted yet, a product choice);
* ``missing``: no test yet; ``why`` says what it would need.

tests/test_catalogue.py checks that every catalogue ID has an entry, that every node id named here exists, and
that docs/reliability.md is what ``python -m tests.catalogue`` prints (so the document cannot drift).
"""

from __future__ import annotations

from typing import NamedTuple

STATUSES = ("full", "weaker", "missing")


class Entry(NamedTuple):
    name: str
    tests: list[str]
    figure: str
    status: str
    why: str = ""


E2E = "tests/e2e/"
CMD = "tests/commands/"

CATALOGUE: dict[str, Entry] = {
    # ------------------------------------------------------------------------------------------------ durability
    "D1": Entry(
        "kill9-during-buffer-and-upload",
        [f"{E2E}test_store_forward.py::test_sigkill_during_upload_loses_and_duplicates_nothing"],
        "A 10,000-sample backlog uploaded across 20 SIGKILLs at random instants (at least 10 of them mid-upload): "
        "every sample stored exactly once, the outbox emptied only by acknowledgements, resends absorbed as "
        "duplicates by the server.",
        "weaker",
        "20 kills, not 200 (each restart costs about a second of a 20-minute suite); the instants are random in "
        "time, not aimed inside the SQLite commit or ack handling; PRAGMA integrity_check after each kill and "
        "'reporting again within 30 s of each restart' are not asserted.",
    ),
    "D2": Entry(
        "power-cut-loop",
        [],
        "",
        "missing",
        "Needs a relay-controlled terminal (100 real power cuts) or a write-reordering block log such as "
        "dm-log-writes (root, a device-mapper target) for the 1,000 replayed crash states. What the suite has is "
        "the precondition: tests/agent/test_outbox.py::test_outbox_is_wal_with_full_sync (WAL, synchronous=FULL).",
    ),
    "D3": Entry(
        "corrupt-buffer-on-boot",
        ["tests/agent/test_outbox_corrupt.py::test_damaged_outbox_at_start_is_quarantined_and_reported",
         "tests/agent/test_outbox_corrupt.py::test_corruption_found_while_running_is_quarantined_and_reported",
         "tests/agent/test_outbox_corrupt.py::test_quarantined_copies_are_bounded"],
        "The 5 damaged files (zero-length, truncated mid-page, random header, garbage -wal, a directory): each "
        "quarantined (renamed, kept), a fresh outbox passing integrity_check, buffer_reset on the server within "
        "60 s, live samples with a healthy storage check, started once (no crash loop); also corruption found "
        "while running.",
        "full",
    ),
    "D4": Entry(
        "broker-or-server-crash-after-ack",
        [f"{E2E}test_hostile_ingest.py::test_stuck_database_fails_readiness_then_recovers_losing_nothing",
         "tests/server/test_write_lock.py::test_failed_writer_does_not_undo_acknowledged_ingest",
         f"{E2E}test_hostile_ingest.py::test_poison_messages_are_refused_alone_and_survive_no_restart"],
        "No acknowledgement before the database commit: while the database refuses writes nothing is "
        "acknowledged and everything is stored once it is free; a failed concurrent write cannot undo "
        "acknowledged samples; a server restart finds nothing left to redeliver.",
        "weaker",
        "The broker and the ingest worker are never SIGKILLed during a drain (50 times each in the catalogue) and "
        "there is no PostgreSQL back end to restart (not adopted yet); a 4,320-sample drain across those kills "
        "would take minutes of the suite's budget.",
    ),
    "D5": Entry(
        "hang-detected-by-watchdog",
        [f"{E2E}test_systemd_notify.py::test_ready_then_watchdog_fed_by_samples",
         f"{E2E}test_systemd_notify.py::test_a_long_interval_raises_the_watchdog_timeout"],
        "READY=1 once, then exactly one WATCHDOG=1 per sample taken and stored (the watchdog is fed on progress "
        "only, which is what catches a deadlocked main loop beside a live thread); a watchdog timeout shorter than "
        "two sampling intervals is raised.",
        "weaker",
        "No systemd in the test container: nothing kills and restarts a frozen agent, so the three hang modes "
        "(SIGSTOP, deadlocked main loop, blocking serial read) and the <= 90 s restart are not exercised; only "
        "the notify protocol the unit relies on is.",
    ),
    "D6": Entry(
        "crash-loop-falls-back",
        [f"{CMD}test_agent_update.py::"
         "test_the_agent_hands_over_to_its_new_release_and_a_release_that_exits_at_start_is_rolled_back",
         f"{CMD}test_reboot_config.py::test_set_config_that_loses_the_server_is_rolled_back",
         "tests/agent/test_config.py::test_bad_config_exits_2_with_the_field"],
        "A staged release with an import error is started 3 times, then the previous release runs and the update "
        "is reported failed ('rolled back'); a remote configuration that loses the server is put back; a bad "
        "local configuration makes the agent exit 2 naming the field.",
        "weaker",
        "The configuration half is not there: a configuration that makes start-up raise is not replaced by a "
        "last-known-good one (the agent exits 2 and stays down) and no config_rejected event exists; the "
        "systemd StartLimit behaviour is not tested (no systemd in the container).",
    ),
    # ------------------------------------------------------------------------------------------------ delivery
    "V1": Entry(
        "72h-broker-outage",
        [f"{E2E}test_store_forward.py::test_72h_broker_outage_all_delivered_oldest_first"],
        "4,320 samples (72 h at 60 s, clock 10,800x) buffered while the broker is down, all stored once after it "
        "returns (within 120 s real), the newest first and then the backlog oldest first, marked not connected and "
        "re-dated.",
        "weaker",
        "No tc netem link (128 kbit/s, 300 ms, 2 % loss needs root and netem in the kernel), so the 15-minute "
        "drain budget is not measured; the 32 MiB database cap, <= 20 messages in flight and the agent's RSS "
        "growth are not asserted.",
    ),
    "V2": Entry(
        "flapping-4G-and-drop-before-puback",
        ["tests/agent/test_link.py::test_first_retry_after_a_drop_is_spread",
         "tests/agent/test_link.py::test_backoff_grows_to_the_cap_and_stays_random",
         f"{E2E}test_store_forward.py::test_sigkill_during_upload_loses_and_duplicates_nothing"],
        "Reconnect backoff is jittered and capped; publishes left unacknowledged by a cut connection are re-read "
        "from SQLite and re-sent, 0 lost and 0 duplicates stored.",
        "weaker",
        "No 24-hour flapping run (time) and no fake broker that closes the socket between PUBLISH and PUBACK "
        "(not built yet); the agent's backoff is 5 s to 600 s (link.reconnect_min_s/max_s), not the "
        "catalogue's 1 s to 120 s, and the CONNECT rate is not measured.",
    ),
    "V3": Entry(
        "denied-publish-is-not-delivery",
        ["tests/agent/test_publish_refused.py::test_denied_telemetry_is_kept_then_delivered_and_reported"],
        "While the ACL denies the telemetry topic (MQTT 5, PUBACK 0x87): 0 rows released, refusals counted and "
        "logged once; after the fix and a SIGHUP every kept sample delivered and publish_not_authorized reported "
        "with the count.",
        "weaker",
        "Denied for seconds, not 1 h, and run with MQTT 5 only: the MQTT 3.1.1 run (where only the server's "
        "application ack keeps the rows) is argued in the docstring, not executed.",
    ),
    "V4": Entry(
        "offline-command-expiry-and-once",
        [f"{CMD}test_jobs.py::test_offline_unit_gets_its_queued_command_when_it_reconnects_and_an_expired_one_never",
         f"{CMD}test_security.py::test_replayed_reboot_is_not_run_again",
         f"{CMD}test_agent_update.py::"
         "test_the_agent_hands_over_to_its_new_release_and_a_release_that_exits_at_start_is_rolled_back"],
        "A reboot valid 10 s for a unit that is offline expires and never runs; a command valid 10 min runs "
        "when the unit connects; a command re-sent by the server across agent restarts runs once; replayed "
        "copies of a reboot run 0 more times.",
        "weaker",
        "Offline for seconds, not 2 h; the server-side expiry is asserted, the agent's own refusal of a "
        "broker-queued expired copy and 'nothing runs from a broker-queued copy after a broker restart' are not "
        "(no persistent broker session with queued commands is set up).",
    ),
    "V5": Entry(
        "retained-command-guard",
        [f"{CMD}test_command_guards.py::test_retained_reboot_is_never_run_and_counted_at_every_reconnect",
         f"{CMD}test_command_guards.py::test_server_never_retains_a_command",
         f"{CMD}test_not_retained.py::test_commands_are_published_not_retained"],
        "A signed reboot left retained on the unit's command topic, the agent (re)connecting 10 times: 0 reboots, "
        "every delivery counted and reported (cmd_refused, reason retained); the server never publishes a command "
        "retained.",
        "full",
    ),
    # ------------------------------------------------------------------------------------------------ bad input
    "B1": Entry(
        "malformed-telemetry-10k",
        [f"{E2E}test_malformed.py::test_ten_thousand_bad_messages",
         f"{E2E}test_ingest_fuzz.py::test_twenty_thousand_generated_messages",
         f"{E2E}test_hostile_ingest.py::test_poison_messages_are_refused_alone_and_survive_no_restart"],
        "10,000 malformed payloads of every listed kind: server up, /healthz 200 throughout, rejection counters "
        "sum to exactly 10,000, oversized packets refused, the healthy unit's sample stored within 30 s; plus "
        "20,000 fuzzed messages each counted exactly once.",
        "weaker",
        "Product choice: samples whose one bad field (NaN CPU, negative counter) is dropped are stored, where the "
        "catalogue says 0 rows; unknown fields are ignored, not counted (forward compatibility, decision 014); "
        "valid traffic latency is asserted < 30 s, not p99 <= 2x baseline (a benchmark figure).",
    ),
    "B2": Entry(
        "identity-mismatch",
        [f"{E2E}test_malformed.py::test_ten_thousand_bad_messages",
         f"{E2E}test_security.py::test_unit_cannot_publish_as_another",
         f"{E2E}test_broker_identity.py::test_a_terminal_publishes_only_under_its_own_sn"],
        "Over 1,000 payloads claiming another unit (or carrying two sn keys) are counted as identity_mismatch "
        "exactly, 0 stored under the claimed SN, a security alert raised for the sender; a topic other than the "
        "certificate's own is refused by the broker (PUBACK 0x87) and nothing is stored.",
        "weaker",
        "The security alert is asserted once per sending unit, not as one security event per payload (100/100).",
    ),
    "B3": Entry(
        "serial-peripheral-fuzz",
        ["tests/drivers/test_printer_codec.py::test_garbage_never_raises_anything_but_driver_errors",
         "tests/drivers/test_idcard_codec.py::test_random_bytes_never_raise_anything_but_driver_errors",
         "tests/drivers/test_modem_codec.py::test_parsers_raise_only_driver_errors",
         "tests/drivers/test_modem_codec.py::test_framer_never_raises",
         "tests/drivers/test_modem_device.py::test_every_fault_switch_on_every_profile",
         "tests/drivers/test_modem_device.py::test_port_vanishes_and_comes_back",
         "tests/drivers/test_modem_device.py::test_urc_mid_reply_goes_to_the_queue",
         "tests/drivers/test_idcard_device.py::test_garbage_on_the_line_is_skipped",
         "tests/drivers/test_idcard_device.py::test_bad_checksum_replies",
         "tests/drivers/test_printer_device.py::"
         "test_reply_later_than_timeout_is_not_answering_and_does_not_poison_the_next_read"],
        "Hypothesis-generated garbage never raises anything but the drivers' own errors; against the emulators "
        "on ptys, garbage, bad checksums, silence, URCs mid-reply, +CME errors and a vanishing port each give a "
        "defined status.",
        "weaker",
        "Hypothesis' default example counts, not 10,000 responses per peripheral; no 64 KiB floods; the "
        "<= 3 s / <= 4 KiB bounds and a full self-test within 30 s with all three peripherals hostile at once are "
        "not asserted.",
    ),
    "B4": Entry(
        "config-file-mutations",
        ["tests/agent/test_config.py::test_bad_values_name_the_field",
         "tests/agent/test_config.py::test_unknown_key_is_named",
         "tests/agent/test_config.py::test_file_errors_name_the_file",
         "tests/agent/test_config.py::test_bad_config_exits_2_with_the_field",
         "tests/console/test_console_changes.py::test_config_set_validates_and_rolls_back_without_the_server",
         f"{CMD}test_reboot_config.py::test_set_config_that_loses_the_server_is_rolled_back"],
        "A dozen hand-written bad files (wrong types, out-of-range values, unknown keys, invalid TOML, missing "
        "file) refused naming the field; at boot the agent exits 2; an invalid change from the console is "
        "refused with nothing changed; a remote change that loses the server is rolled back.",
        "weaker",
        "No 1,000 generated mutations (binary, wrong permissions, symlinks); at boot there is no last-known-good "
        "fallback (exit 2 instead), and the remote set_config command's rejection of an invalid value is not "
        "tested through the agent.",
    ),
    "B5": Entry(
        "api-schemathesis",
        ["tests/server/test_api_schemathesis.py::test_every_answer_matches_the_published_schema",
         "tests/server/test_api_hostile_input.py::test_out_of_range_input_is_a_422_naming_the_field",
         "tests/e2e/test_flow.py::test_api_requires_a_token_and_role"],
        "Every operation with positive and negative examples (admin) and positive examples (viewer): no 5xx, no "
        "undocumented status or content type, every body matching /openapi.json; out-of-range input is a 422; "
        "no or a wrong token is a 401.",
        "weaker",
        "25 (admin) and 5 (viewer) examples per operation, not >= 100 (suite time); no engineer token; no "
        "ignored_auth check and no stateful phase.",
    ),
    "B6": Entry(
        "command-payload-fuzz",
        [f"{CMD}test_security.py::test_forged_tampered_misaddressed_expired_and_unknown_commands_never_run",
         f"{CMD}test_api.py::test_unknown_type_and_bad_params_are_refused_by_the_api",
         f"{CMD}test_update.py::test_agent_refuses_bad_signature_wrong_hash_and_wrong_model"],
        "Six hand-made bad envelopes (tampered body, rogue key, other SN, expired, unknown type, unknown parameter) "
        "and six bad update commands: 0 executed, each refusal reported with its reason; the API refuses unknown "
        "types and parameters with 422.",
        "weaker",
        "No 10,000 generated envelopes (bad JSON, huge params, shell metacharacters); the <= 1 report/s rate limit "
        "and 'no subprocess started with unvalidated input' are not asserted.",
    ),
    # ------------------------------------------------------------------------------------------------ security
    "S1": Entry(
        "mtls-negative-matrix",
        [f"{E2E}test_security.py::test_fleet_certificate_is_accepted",
         f"{E2E}test_security.py::test_no_certificate_is_refused",
         f"{E2E}test_security.py::test_certificate_from_another_ca_is_refused",
         f"{E2E}test_security.py::test_revoked_certificate_is_refused",
         f"{E2E}test_security.py::test_plain_tcp_is_refused",
         f"{E2E}test_broker_identity.py::test_a_revoked_units_open_session_stores_nothing_more"],
        "No certificate, another CA's certificate, a revoked one and plain TCP are refused, a fleet certificate "
        "accepted; after revoke + SIGHUP a live session of the revoked unit stores nothing more and cannot "
        "reconnect.",
        "weaker",
        "4 of the 8 negative cases: expired, not-yet-valid, the CA certificate as a leaf, TLS 1.0 and TLS 1.1 are "
        "not tried.",
    ),
    "S2": Entry(
        "agent-verifies-server",
        ["tests/agent/test_tls.py::test_tls_context",
         "tests/agent/test_tls_dates.py::test_chain_and_name_are_verified_even_with_the_dates_deferred",
         "tests/agent/test_tls_dates.py::test_a_corrected_clock_checks_the_dates_itself"],
        "The agent's TLS context requires a certificate chaining to the fleet CA, checks the host name, and "
        "allows TLS 1.2 at least; real loopback handshakes against a server with another host name or a "
        "self-signed certificate are refused even while the date check waits for the server's time, and a "
        "certificate expired at the corrected time is refused.",
        "weaker",
        "No broker with a public-CA certificate is stood up against the real agent process, and 'no option to "
        "disable verification' is asserted only through the code path (there is no such setting), not as a "
        "config-file test.",
    ),
    "S3": Entry(
        "cross-unit-acl",
        [f"{E2E}test_broker_identity.py::test_a_terminal_publishes_only_under_its_own_sn",
         f"{E2E}test_broker_identity.py::test_a_terminals_subscription_outside_its_own_topics_receives_nothing",
         f"{E2E}test_broker_identity.py::test_a_terminal_in_the_servers_share_group_takes_nothing"],
        "22 cases on Mosquitto: 12 publishes outside the unit's own topics answered PUBACK 0x87 and seen by "
        "nobody, 10 subscriptions outside them (incl. #, $SYS/#, shares) receive nothing; intruders in the "
        "server's share group take nothing.",
        "weaker",
        "Mosquitto 2.0's acl_file grants every SUBSCRIBE (decision 011), so SUBACK failure codes are not "
        "asserted, only that nothing is delivered; EMQX is not adopted, so the run is on one broker.",
    ),
    "S4": Entry(
        "client-id-spoof-and-shared-cert",
        [f"{E2E}test_broker_identity.py::test_a_client_id_is_the_certificates_own",
         f"{E2E}test_hostile_ingest.py::test_one_certificate_on_two_terminals_is_flagged"],
        "(a) A unit connecting under another unit's or the server's client id logs out nobody: the victim and "
        "the server's ingest stay connected, 0 take-overs. (b) Two real agents on one certificate: "
        "certificate_shared raised for that unit within 60 s (> 3 take-overs in 10 min), no other unit flagged.",
        "weaker",
        "(b) runs for about a minute, not 30 min, and detects by take-overs only: the agent's state carries no "
        "boot_id, so 'two concurrent boot_ids' is not used.",
    ),
    "S5": Entry(
        "fleet-audit-job",
        [],
        "",
        "missing",
        "There is no fleet audit job yet (shared certificates, revoked-but-connected, expiring certificates, weak "
        "keys, ACL lines granting #, ...); the test needs the job and a 1,000-device seeded fleet.",
    ),
    "S6": Entry(
        "command-authenticity",
        [f"{CMD}test_security.py::test_forged_tampered_misaddressed_expired_and_unknown_commands_never_run",
         f"{CMD}test_security.py::test_a_forged_copy_sent_first_does_not_block_the_genuine_command"],
        "A tampered body, a key not endorsed by the fleet CA, another unit's SN, an unknown type and parameters "
        "outside the schema: 0 run, each refusal reported; valid commands run afterwards.",
        "weaker",
        "6 mutated commands, not 1,000; no unsigned command, no revoked/rotated-out key and no key-rotation step "
        "(the agent's revoked_keys list exists but is not exercised here).",
    ),
    "S7": Entry(
        "command-replay-and-freshness",
        [f"{CMD}test_security.py::test_replayed_reboot_is_not_run_again",
         f"{CMD}test_reboot_config.py::test_reboot_runs_exactly_once_with_the_agent_killed_at_random_points",
         f"{CMD}test_security.py::test_forged_tampered_misaddressed_expired_and_unknown_commands_never_run"],
        "A captured reboot replayed 3 times after the unit rebooted runs 0 more times; a reboot runs exactly once "
        "across SIGKILLs at random points; an expired command is refused 'expired'.",
        "weaker",
        "No lower-seq test; the kill runs are fewer than 100 and there are no power cuts (relay hardware).",
    ),
    "S8": Entry(
        "destructive-command-budget",
        [f"{CMD}test_command_guards.py::test_agent_runs_at_most_three_reboots_an_hour",
         f"{CMD}test_command_guards.py::test_server_refuses_the_fourth_reboot_within_an_hour",
         f"{CMD}test_command_guards.py::test_shutdown_waits_for_an_update_in_progress"],
        "Of 5 signed reboots within the hour 3 run and the others are refused rate_limited (agent), the server "
        "answers the 4th with 429; a shutdown during an update is deferred and runs after the rollback.",
        "weaker",
        "5 reboots, not 50 (each one that runs restarts the agent process); the deferral is tested with an "
        "update that rolls back, not with one that commits.",
    ),
    "S9": Entry(
        "rbac-matrix",
        ["tests/server/test_registry.py::test_viewer_reads_but_cannot_write",
         f"{CMD}test_api.py::test_engineer_sends_diagnostics_but_cannot_reboot_and_viewer_sends_nothing",
         "tests/e2e/test_flow.py::test_api_requires_a_token_and_role"],
        "Spot checks of the role policy: a viewer reads but cannot write, an engineer sends diagnostics but not "
        "reboots, no token is a 401.",
        "weaker",
        "No generated matrix of every route x role x county: roles are not scoped by county yet (no "
        "other-county 404), and mass-assignment of role/is_admin/county_id is not tried.",
    ),
    "S10": Entry(
        "authn-hardening",
        ["tests/server/test_api_limits.py::test_wrong_tokens_lock_the_address_out",
         "tests/server/test_api_limits.py::test_lockout_ends",
         "tests/server/test_tokens.py::"
         "test_a_token_revoked_with_the_cli_is_refused_at_once_by_every_process_of_a_running_server"],
        "10 wrong tokens lock the address out for 900 s (15 min) with 429; a revoked token is refused by every "
        "server process from the next request on.",
        "weaker",
        "Tokens have no expiry and there is no logout or role change to test; credentials in query strings are "
        "not tried.",
    ),
    "S11": Entry(
        "audit-complete-and-tamper-evident",
        [f"{CMD}test_api.py::test_engineer_sends_diagnostics_but_cannot_reboot_and_viewer_sends_nothing",
         "tests/server/test_api_limits.py::test_requests_without_a_valid_token_are_audited_per_address_per_minute"],
        "Each API write, refused ones included, is audited with actor, client address, target and status; "
        "command state changes are audited; failed logins are audited per address per minute; engineers cannot "
        "read the audit.",
        "weaker",
        "No 1,000 random actions across roles; no hash chain exists, so tampering with audit rows is not "
        "detected or tested; params hash and role per entry are not asserted.",
    ),
    "S12": Entry(
        "secrets-at-rest",
        [f"{E2E}test_catalogue_s12.py::test_every_private_key_written_by_provisioning_is_0600_even_under_umask_000",
         f"{E2E}test_catalogue_s12.py::test_no_private_key_or_token_in_logs_or_databases",
         f"{E2E}test_ca_cli.py::test_ca_cli_enroll_and_the_broker_config_it_writes",
         "tests/server/test_units_api.py::test_tokens_are_stored_hashed",
         f"{E2E}test_key_passphrase.py::test_encrypted_key_passphrase_is_used_and_never_logged"],
        "Every private key written by provisioning (CA, broker, server, command, update, terminal) is mode 0600 "
        "and owned by the user even under umask 000, the CA key encrypted; no PRIVATE KEY, key body or API token "
        "in the agent's log and outbox or the server's log and database; tokens stored as SHA-256.",
        "weaker",
        "Ownership by a dedicated agent user and backups/crash reports are not checked (the test runs as one "
        "user; the agent writes no backups or crash reports); the server has tokens only, no passwords to hash "
        "slowly.",
    ),
    "S13": Entry(
        "api-resource-and-bulk-limits",
        ["tests/server/test_api_limits.py::test_each_token_has_a_budget",
         "tests/server/test_api_limits.py::test_each_address_has_a_budget",
         f"{CMD}test_api.py::test_unknown_type_and_bad_params_are_refused_by_the_api",
         f"{CMD}test_api.py::test_pending_commands_per_unit_are_bounded"],
        "A per-token and a per-address request budget answer 429 (no 5xx); a command to 60 units needs "
        "confirm=true (409 without); pending commands per unit are bounded.",
        "weaker",
        "Page sizes above the route's bound are refused 422, not clamped to <= 500; no load of 1,000 req/s; "
        "bulk destructive commands need a confirmation, not a second admin's approval, and staggering above "
        "1,000 terminals is not tested.",
    ),
    "S14": Entry(
        "egress-canary",
        [f"{E2E}test_privacy.py::test_card_read_on_request_reaches_the_server_masked_only",
         f"{E2E}test_agent_peripherals.py::test_peripheral_faults_identity_and_privacy",
         "tests/server/test_ingest_boundary.py::test_event_data_outside_the_schema_is_never_stored",
         "tests/capture/test_privacy.py::test_a_card_read_capture_holds_no_personal_data"],
        "A synthetic card read on request: name, ID number and address absent from the decoded MQTT payloads, "
        "the server database, the agent's log, outbox and command store (masked form only); name/ID fields in "
        "event data are never stored by the server; captures hold no card data.",
        "weaker",
        "No 24-hour run with a forced crash, a log-upload command and a backlog drain; no canary in POS-app log "
        "files; photo magic bytes are searched in captures only; no broker-side capture of all egress.",
    ),
    "S15": Entry(
        "reader-command-allow-list",
        [f"{E2E}test_agent_peripherals.py::test_peripheral_faults_identity_and_privacy"],
        "In normal operation the reader emulator never receives a find, select or read command.",
        "weaker",
        "Health checks only, for a few sampling intervals: not 1,000 self-tests with a card present half the "
        "time, and the allow-list (status/SAM information only) is checked as a deny-list of card commands.",
    ),
    "S16": Entry(
        "log-redaction",
        ["tests/agent/test_log_redaction.py::test_no_mobile_number_reaches_the_log",
         "tests/drivers/test_idcard_privacy.py::test_redacting_filter_masks_ids_in_other_log_lines",
         "tests/drivers/test_idcard_privacy.py::test_log_redactor_masks_foreigner_permit_numbers_too",
         "tests/drivers/test_idcard_codec.py::test_redact_text_never_leaves_an_id",
         "tests/drivers/test_idcard_privacy.py::test_errors_in_the_middle_of_a_read_never_leak"],
        "Generated mobile numbers and ID numbers (trailing X included) in messages, arguments and exceptions "
        "leave the log filter masked; a card read never leaks through errors mid-read.",
        "weaker",
        "The generated strings go through the log filter in process, not 10,000 through journald and the "
        "server's log files; Chinese names in known fields are not covered by the log redactor test.",
    ),
    # ------------------------------------------------------------------------------------------------ resources
    "R1": Entry(
        "disk-full-and-readonly",
        [f"{E2E}test_disk.py::test_disk_full_then_freed",
         f"{E2E}test_disk.py::test_read_only_data_dir",
         f"{E2E}test_disk.py::test_fresh_terminal_on_a_read_only_data_dir",
         "tests/agent/test_memory_fallback.py::test_memory_fallback_keeps_the_newest_up_to_its_cap"],
        "A full and a read-only data filesystem (tmpfs): the agent stays up, reports the storage fault in its "
        "live samples, keeps delivering from bounded memory, logs the failure once and recovers when space "
        "returns (within 30 s).",
        "weaker",
        "Seconds, not 2 h and 1 h; integrity_check after recovery and 'buffering resumes within 1 interval' are "
        "not asserted; needs root to mount the tmpfs (skipped otherwise).",
    ),
    "R2": Entry(
        "buffer-cap-and-drop-accounting",
        ["tests/agent/test_outbox.py::test_cap_reduces_detail_first_and_keeps_counting_fields",
         "tests/agent/test_outbox.py::test_cap_drops_oldest_when_reduction_is_not_enough"],
        "The outbox stays under its byte cap: detail is reduced first, then the oldest rows are dropped, the "
        "newest kept, drops and reductions counted.",
        "weaker",
        "Hundreds of rows, not 43,200 (30 days) against 20,000 rows / 32 MiB; the exact drop count, the "
        "availability code data_dropped (not implemented) and the log cap under a debug storm are not asserted.",
    ),
    "R3": Entry(
        "memory-soak-and-leak",
        [],
        "",
        "missing",
        "Needs a 72-hour soak at 10x sample rate (far beyond the suite's time budget; a nightly job) and a "
        "systemd unit with MemoryMax=128M beside a POS process to show the OOM kill stays in the agent's cgroup.",
    ),
    "R4": Entry(
        "pos-app-not-disturbed",
        [],
        "",
        "missing",
        "Needs a scripted POS transaction loop with a latency baseline and the agent under CPUQuota/IOSchedulingClass "
        "(systemd or cgroups); tests/e2e/test_backlog_pacing.py only shows the backlog is paced on the link.",
    ),
    "R5": Entry(
        "single-device-flood",
        [f"{E2E}test_hostile_ingest.py::test_flooding_unit_is_budgeted_and_flagged_others_unaffected"],
        "One unit floods 3,000 messages beside a healthy one: cut to its budget (100 stored, 2,900 counted "
        "over_budget), flagged with a security alert, the healthy unit's samples acknowledged within 10 s.",
        "weaker",
        "Two units, not 1,000 msg/s for 10 min among 5,000: that is benchmarks/bench_flood.py (figures in "
        "docs/performance.md); ingest p99 <= 2 s and server memory stability are benchmark figures, not asserted.",
    ),
    "R6": Entry(
        "reconnect-storm",
        ["tests/agent/test_link.py::test_first_retry_after_a_drop_is_spread",
         "tests/agent/test_link.py::test_backoff_grows_to_the_cap_and_stays_random"],
        "3,000 simulated terminals' first retries spread over 5-10 s with no second holding 30 % of them; later "
        "retries random up to the cap.",
        "weaker",
        "Pure backoff arithmetic: no broker restart with 50,000 connected devices (EMQX not adopted; a benchmark, "
        "not a suite test), so 'all connected within 10 min' and 'backlog within 30 min' are not measured.",
    ),
    # ------------------------------------------------------------------------------------------------ time
    "T1": Entry(
        "rtc-10-years-behind",
        ["tests/agent/test_clock_check.py::test_samples_before_the_check_are_unverified_and_held",
         "tests/agent/test_outbox.py::test_unchecked_clock_rows_are_held_then_redated_onto_their_slot",
         "tests/agent/test_outbox.py::test_rows_of_an_earlier_boot_are_released_unverified",
         f"{E2E}test_store_forward.py::test_72h_broker_outage_all_delivered_oldest_first",
         f"{E2E}test_wrong_clock.py::test_a_wrong_clock_connects_and_its_samples_are_dated_right",
         f"{E2E}test_wrong_clock.py::test_a_server_time_at_which_the_broker_certificate_is_invalid_is_refused"],
        "Samples taken before the clock is checked are held, then re-dated from boot time onto their slot and "
        "marked corrected; 4,320 such samples arrive re-dated; a real agent under libfaketime 540 days behind "
        "(and ahead) of true time connects, its broker certificate's dates checked against the server's time, "
        "and every stored sample is dated within -2..+40 s of the server's receipt; a server time at which the "
        "broker certificate is invalid is refused.",
        "weaker",
        "1.5 years behind, not 10 (the test CA's certificates are younger than that); NTP is not blocked (the "
        "agent runs with trust_ntp = false instead); clock_unsynced is not reported as such; the bound asserted "
        "is -2..+40 s of the server's receipt, not +-2 s of true time.",
    ),
    "T2": Entry(
        "clock-ahead-then-stepped-back",
        [],
        "",
        "missing",
        "Needs the agent run with a clock 5 years ahead then stepped back (the simulator's clock can do it) and a "
        "server that flags and re-bases future samples as clock_skew (it refuses items dated far ahead as "
        "'future' instead, tests/e2e/test_malformed.py); command expiry against a wrong device clock is not tested.",
    ),
    "T3": Entry(
        "shanghai-day-boundaries",
        ["tests/availability/test_catalogue_t3.py::test_a_year_counts_the_same_whatever_the_hosts_time_zone",
         "tests/availability/test_catalogue_t3.py::test_samples_either_side_of_16_utc_fall_in_different_local_days",
         "tests/availability/test_catalogue_t3.py::test_every_local_day_of_a_year_has_1440_minutes",
         "tests/availability/test_availability_counter.py::test_dst_zone_slots_stay_on_the_minute"],
        "A year of minute fixtures counted under TZ=UTC, Asia/Shanghai and America/New_York: identical codes, "
        "figures and day roll-ups; 15:59:59Z and 16:00:00Z fall in different local days; all 365 local days "
        "have exactly 1,440 slots.",
        "weaker",
        "On the pure counter: 'all stored timestamps UTC' (the server's tables) is not asserted. The two instants "
        "are in different days, but a 60 s sample stamped 15:59:59Z covers the slot starting 16:00:00Z (slots "
        "starting in [t, t+interval)), i.e. the next day; the test uses samples stamped on the minute, as the "
        "agent stamps them.",
    ),
    "T4": Entry(
        "availability-with-late-backlog",
        ["tests/server/test_availability.py::test_day_counted_by_hand",
         "tests/server/test_availability.py::test_late_samples_recount_the_hours_they_cover",
         "tests/sim/test_oracle_compare.py::test_modem_unresponsive_and_power_off_during_outage_equal_oracle"],
        "A day counted by hand (link down = intact but network not ok; nothing received = no data) matches to the "
        "slot; a late link-down backlog recounts the past day exactly; a power-off during an outage equals the "
        "oracle through the whole chain.",
        "weaker",
        "Half an hour of late backlog, not 72 h; the categories are the counter's (intact/network ok/no data), "
        "not device_up_link_down/device_down, and the new boot_id after a power-off is not checked.",
    ),
    # ------------------------------------------------------------------------------------------------ updates
    "U1": Entry(
        "update-integrity",
        [f"{CMD}test_update.py::test_agent_refuses_bad_signature_wrong_hash_and_wrong_model",
         f"{CMD}test_update.py::test_server_refuses_a_package_with_a_bad_signature"],
        "One flipped byte, a key from another CA, a signature over another version and a longer-than-declared "
        "download are refused; nothing installed, no partial file kept; the server refuses a bad signature.",
        "weaker",
        "One flipped offset, not 1,000; no truncated or unsigned artifact and no revoked key; 'aborted at manifest "
        "size + 0 bytes' is asserted only as 'sent more than' the declared size.",
    ),
    "U2": Entry(
        "anti-rollback-compat-freeze",
        [f"{CMD}test_update.py::test_update_installs_and_a_version_failing_its_health_check_is_rolled_back",
         f"{CMD}test_update.py::test_agent_refuses_bad_signature_wrong_hash_and_wrong_model"],
        "An older version is refused ('not above the installed'), a package for another model refused naming the "
        "terminal's model.",
        "weaker",
        "2 of 4: the same version and expired metadata are not tried; there is no metadata expiry or "
        "update_metadata_expired alarm yet.",
    ),
    "U3": Entry(
        "failing-version-rolls-back",
        [f"{CMD}test_agent_update.py::"
         "test_the_agent_hands_over_to_its_new_release_and_a_release_that_exits_at_start_is_rolled_back",
         f"{CMD}test_update.py::test_update_installs_and_a_version_failing_its_health_check_is_rolled_back"],
        "(a) a release exiting at start is rolled back after 3 starts, (b) one failing its health check is rolled "
        "back, (c) one that never hears the server rolls itself back at its deadline; each reported failed "
        "'rolled back' with the reason.",
        "weaker",
        "One run per variant, not 20/20 (each costs tens of seconds); (d) a release that reboots the terminal at "
        "start is not tried (needs a boot counter across real reboots).",
    ),
    "U4": Entry(
        "power-cut-at-every-update-step",
        [f"{CMD}test_agent_update.py::"
         "test_the_agent_hands_over_to_its_new_release_and_a_release_that_exits_at_start_is_rolled_back",
         f"{CMD}test_download.py::test_a_partial_file_left_by_a_killed_agent_is_resumed"],
        "SIGKILL just after the new release started: the next start runs the new release, which confirms and "
        "reports once; a partial download left by a killed agent is resumed.",
        "weaker",
        "2 step points, once each, not 10 step points x 10 kills (time), and kill -9 rather than power cuts "
        "(relay hardware).",
    ),
    "U5": Entry(
        "update-resource-failures",
        [f"{CMD}test_download.py::"
         "test_a_download_cut_twice_mid_transfer_resumes_with_range_requests_in_smaller_blocks_and_verifies",
         f"{CMD}test_download.py::test_a_partial_file_that_is_not_the_package_is_refused_and_deleted"],
        "A download cut twice mid-transfer resumes with range requests and verifies the full hash; a partial file "
        "that is not the package is deleted.",
        "weaker",
        "Disk full during download and a 10-minute stall aborted are not tested; 'free space back within 1 MiB' "
        "is not measured.",
    ),
    "U6": Entry(
        "schema-migration-downgrade",
        [],
        "",
        "missing",
        "Needs two agent releases with different outbox schemas (the outbox has one schema so far) and a forced "
        "rollback with 4,320 samples buffered, checking the old release reads them all.",
    ),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _links(tests: list[str]) -> str:
    out = []
    for node in tests:
        path, _, func = node.partition("::")
        out.append(f"[{_cell(func)}](../{path}) ({path.removeprefix('tests/')})")
    return "<br>".join(out) if out else "-"


def render() -> str:
    """docs/reliability.md, from CATALOGUE."""
    counts = {s: sum(1 for e in CATALOGUE.values() if e.status == s) for s in STATUSES}
    lines = [
        "<!-- Produced by `python -m tests.catalogue > docs/reliability.md`; edit tests/catalogue.py, not this file. -->",
        "",
        "# Reliability catalogue: what the test suite asserts",
        "",
        "The reliability and security catalogue (`reliability-catalogue.md` in the shared reference folder) lists "
        f"{len(CATALOGUE)} tests, each with a pass figure. This table says, for each of them, which tests of this "
        "repository exercise it and the figure they really assert:",
        "",
        "- **full**: the tests assert the catalogue's figure;",
        "- **weaker**: they assert a weaker figure, and *why* says what is missing and why (the time budget of a "
        "20-minute suite, hardware such as relay power cuts, tc netem, EMQX or PostgreSQL not adopted yet);",
        "- **missing**: no test yet, and *why* says what one would need.",
        "",
        f"Totals: {counts['full']} full, {counts['weaker']} weaker, {counts['missing']} missing.",
        "",
        "tests/test_catalogue.py fails when a catalogue ID has no entry, when a named test is deleted or renamed, "
        "or when this file differs from what `python -m tests.catalogue` prints.",
        "",
        "| ID | Name | Tests | Figure asserted | Status | Why |",
        "|---|---|---|---|---|---|",
    ]
    for cid, e in CATALOGUE.items():
        lines.append(f"| {cid} | {_cell(e.name)} | {_links(e.tests)} | {_cell(e.figure) or '-'} | {e.status} | "
                     f"{_cell(e.why) or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
