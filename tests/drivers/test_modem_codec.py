"""Modem codec on literal inputs. Each case names its source:

* MM-serial  = ModemManager src/tests/test-at-serial-port.c
* MM-helpers = ModemManager src/tests/test-modem-helpers.c
* MM-simtech = ModemManager src/plugins/simtech/tests/test-modem-helpers-simtech.c
* QModem     = FUjr/modem_feeds luci-app-qmodem vendor scripts (field order and captures)
* quectel-CM = FUjr/modem_feeds quectel_CM_5G_M log ecm_ncm_rndis.txt
* 27.007     = 3GPP TS 27.007; vendor manuals as named (all via peripherals.md section 1)
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError, ProtocolError
from drivers.modem import codec

# ---------------------------------------------------------------------------------- framing


def test_ok_then_urc_both_seen():  # MM-serial: "\r\nOK\r\n\r\n+CMTI: \"ME\",1\r\n"
    r = codec.parse_response(b'\r\nOK\r\n\r\n+CMTI: "ME",1\r\n', "AT")
    assert r.ok and r.lines == []
    assert r.trailing == ['+CMTI: "ME",1']


def test_echo_before_first_crlf_line_is_stripped():  # MM-serial: "echo echo\r\nthis is valid"
    r = codec.parse_response(b"echo echo\r\nthis is valid\r\nOK\r\n", "AT+X")
    assert r.echo == ["echo echo"]
    assert r.lines == ["this is valid"]


def test_echo_of_command_stripped_with_cr_cr_lf():  # echo "AT+CSQ\r" then "\r\n..." (27.007 V.250 echo)
    r = codec.parse_response(b"AT+CSQ\r\r\n+CSQ: 17,99\r\n\r\nOK\r\n", "AT+CSQ", ("+CSQ:",))
    assert r.lines == ["+CSQ: 17,99"] and r.ok


def test_simcom_cr_cr_lf_urc():  # MM-simtech: "\r\r\n+CRING: VOICE\r\r\n"
    r = codec.parse_response(b"\r\r\n+CRING: VOICE\r\r\n\r\r\nOK\r\r\n", "AT")
    assert r.urcs == ["+CRING: VOICE"] and r.ok


def test_urc_between_info_lines_is_routed_apart():  # peripherals.md 1.1: URCs arrive between info lines
    raw = b"\r\nQuectel\r\n\r\n+CEREG: 1\r\n\r\nEC25\r\n\r\n+QIND: \"csq\",20,99\r\n\r\nRevision: EC25EFAR06A09M4G\r\n\r\nOK\r\n"
    r = codec.parse_response(raw, "ATI")
    assert r.lines == ["Quectel", "EC25", "Revision: EC25EFAR06A09M4G"]
    assert r.urcs == ["+CEREG: 1", '+QIND: "csq",20,99']


def test_expected_prefix_is_info_not_urc():  # AT+CEREG? answers a +CEREG: line that is also a URC prefix
    r = codec.parse_response(b'\r\n+CEREG: 2,1,"1A2B","0A1B2C3",7\r\n\r\nOK\r\n', "AT+CEREG?", ("+CEREG:",))
    assert r.lines == ['+CEREG: 2,1,"1A2B","0A1B2C3",7'] and r.urcs == []


def test_boot_garbage_rdate0q0v1():  # quectel-CM: "RDATE0Q0V1" then "COMMAND NOT SUPPORT"
    r = codec.parse_response(b"RDATE0Q0V1\r\n\r\nCOMMAND NOT SUPPORT\r\n", "AT")
    assert r.final is not None and r.final.kind == "not_supported" and not r.ok


def test_incremental_feed_byte_by_byte():  # framing must not depend on chunk boundaries
    reader = codec.ResponseReader("AT+CSQ", ("+CSQ:",))
    for b in b"\r\n+CSQ: 31,99\r\n\r\nOK\r\n+CREG: 5\r":
        reader.feed(bytes([b]))
    assert reader.done and reader.response.lines == ["+CSQ: 31,99"]
    assert reader.response.trailing == ["+CREG: 5"]


def test_lone_lf_and_noise_bytes_tolerated():  # peripherals.md 1.7: never assume CR LF pairs
    r = codec.parse_response(b"\n+CSQ: 5,99\n\xfe\x00\nOK\n", "AT+CSQ", ("+CSQ:",))
    assert r.lines == ["+CSQ: 5,99"] and r.ok


@pytest.mark.parametrize(
    "line,kind,code",
    [  # MM-serial final codes; Unisoc "COMMAND NOT SUPPORT"; Huawei "MODEM ERROR"
        ("OK", "ok", None), ("ERROR", "error", None), ("+CME ERROR: 10", "cme", 10),
        ("+CME ERROR: SIM not inserted", "cme", 10), ("+CME ERROR: SIM busy", "cme", 14),
        ("+CMS ERROR: 500", "cms", 500), ("NO CARRIER", "no_carrier", None), ("BUSY", "busy", None),
        ("NO ANSWER", "no_answer", None), ("NO DIALTONE", "no_dialtone", None), ("CONNECT", "connect", None),
        ("CONNECT 150000000", "connect", None), ("COMMAND NOT SUPPORT", "not_supported", None),
        ("MODEM ERROR: 3", "modem_error", 3),
    ],
)
def test_final_result_codes(line, kind, code):
    f = codec.final_result(line)
    assert f is not None and f.kind == kind and f.code == code


@pytest.mark.parametrize("line", ["+CME ERROR:", "+CME ERROR: ", "UNKNOWN COMMAND", "OKAY", "+CSQ: 1,2"])
def test_not_final(line):  # MM-serial: empty +CME ERROR and UNKNOWN COMMAND are not final
    assert codec.final_result(line) is None


def test_cme_verbose_text_kept():  # 27.007 §9.2 verbose form after AT+CMEE=2
    f = codec.final_result("+CME ERROR: operation not allowed")
    assert f is not None and f.code == 3 and f.text == "operation not allowed"


# ---------------------------------------------------------------------------------- CSQ / CESQ


@pytest.mark.parametrize(
    "line,rssi,dbm",
    [("+CSQ: 17,99", 17, -79), ("+CSQ: 0,0", 0, -113), ("+CSQ: 31,99", 31, -51), ("+CSQ: 99,99", None, None),
     ("+CSQ:2,5", 2, -109)],
)
def test_csq(line, rssi, dbm):  # 27.007 §8.5: dBm = -113 + 2*rssi, 99 unknown (not excellent)
    c = codec.parse_csq(line)
    assert (c.rssi, c.rssi_dbm) == (rssi, dbm)


@pytest.mark.parametrize("line", ["+CSQ: 40,99", "+CSQ: ,", "+CSQ: 17", "+CSQ: a,b"])
def test_csq_bad(line):
    with pytest.raises(ProtocolError):
        codec.parse_csq(line)


def test_cesq_lte():  # 27.007 §8.69 with ModemManager conversions (rsrp-141, rsrq/2-20)
    s = codec.parse_cesq("+CESQ: 99,99,255,255,20,46")
    assert (s.rsrp_dbm, s.rsrq_db) == (-95.0, -10.0)
    assert codec.parse_cesq("+CESQ:99,99,255,255,255,255").rsrp_dbm is None


def test_cesq_3g_keeps_rscp_and_ecio():  # 27.007 §8.69: rscp level-121 (0..96), ecno level/2-24.5 (0..49)
    s = codec.parse_cesq("+CESQ: 99,99,36,37,255,255")  # a WCDMA cell: LTE fields unknown
    assert (s.rscp_dbm, s.ecio_db, s.rsrp_dbm, s.technology) == (-85.0, -6.0, None, "umts")
    assert codec.parse_cesq("+CESQ: 99,99,255,255,20,46").rscp_dbm is None  # LTE: no 3G figures
    assert codec.parse_cesq("+CESQ: 99,99,255,255,20,46").ecio_db is None


# ---------------------------------------------------------------------------------- ICCID


@pytest.mark.parametrize(
    "raw,expected",
    [  # MM-helpers test_iccid_parse_*
        ('"984402003576012594F9"', "8944200053671052499"),
        ("98231420326409614067", "89324102234690160476"),
        ("8944200053671052499F", "8944200053671052499"),
        ("8944200053671052499", "8944200053671052499"),
        ('"89324102234690160476"', "89324102234690160476"),
        ('"898602F9091830030220"', "898602F9091830030220"),
        ('"898602C0123456789012"', "898602C0123456789012"),
        ("898602c0123456789012", "898602C0123456789012"),  # lower-case hex upper-cased
    ],
)
def test_iccid(raw, expected):
    assert codec.parse_iccid(raw) == expected


@pytest.mark.parametrize(
    "raw", ["982314203264096", "98231420326pl9614067", '"0044200053671052499"', "0044200053671052499",
            "9823142032640961406"],  # MM-helpers invalid cases; a swapped value of 19 chars
)
def test_iccid_invalid(raw):
    with pytest.raises(ProtocolError):
        codec.parse_iccid(raw)


@pytest.mark.parametrize(
    "line",  # peripherals.md 1.2 dialect table: Quectel, SIMCom (+ICCID for AT+CICCID), Huawei, Fibocom
    ["+QCCID: 898602F9091830030220", "+ICCID: 898602F9091830030220", "^ICCID: 9868209F908103302002",
     '+CCID: "898602F9091830030220"'],
)
def test_iccid_vendor_prefixes(line):
    assert codec.parse_iccid(line) == "898602F9091830030220"


def test_crsm_iccid():  # +CRSM reply: spaces and quotes both seen (peripherals.md 1.2)
    crsm = codec.parse_crsm('+CRSM: 144, 0,"98231420326409614067"')
    assert crsm.ok and codec.parse_iccid(crsm.data) == "89324102234690160476"
    assert not codec.parse_crsm("+CRSM: 106,130").ok


# ---------------------------------------------------------------------------------- IMSI / IMEI / PLMN


def test_imei_and_imsi():  # 27.007 +CGSN bare line; Fibocom FM150 '+CGSN: "<imei>"'; +CIMI: form
    assert codec.parse_imei(["861234567890123"]) == "861234567890123"
    assert codec.parse_imei('+CGSN: "861234567890123"') == "861234567890123"
    assert codec.parse_imsi(["460001234567890"]) == "460001234567890"
    assert codec.parse_imsi("+CIMI: 460110123456789") == "460110123456789"
    with pytest.raises(ProtocolError):
        codec.parse_imsi(["ERROR-ish"])


@pytest.mark.parametrize(
    "imsi,carrier",
    [("460001234567890", "China Mobile"), ("460071234567890", "China Mobile"), ("460011234567890", "China Unicom"),
     ("460061234567890", "China Unicom"), ("460111234567890", "China Telecom"), ("460031234567890", "China Telecom"),
     ("460151234567890", "China Broadnet"), ("460991234567890", None)],
)
def test_imsi_to_carrier(imsi, carrier):  # ITU E.212 MCC 460 table (peripherals.md 1.3)
    plmn = codec.plmn_from_imsi(imsi)
    assert plmn is not None and plmn[0] == "460" and len(plmn[1]) == 2
    assert codec.carrier_name(*plmn) == carrier


def test_imsi_of_other_country_has_no_guessed_mnc():  # MNC length is not knowable from the IMSI alone
    assert codec.plmn_from_imsi("310260123456789") is None


@pytest.mark.parametrize("plmn,mcc,mnc", [("41201", "412", "01"), ("342600", "342", "600"), ("46000", "460", "00")])
def test_plmn(plmn, mcc, mnc):  # MM-helpers mm_3gpp_parse_operator_id cases
    assert codec.parse_plmn(plmn) == (mcc, mnc)


@pytest.mark.parametrize("plmn", ["00001", "4120", "4120123", "41a01", ""])
def test_plmn_bad(plmn):  # MM rejects MCC 000, non-digits, lengths other than 5-6
    with pytest.raises(ProtocolError):
        codec.parse_plmn(plmn)


# ---------------------------------------------------------------------------------- COPS


def test_cops_forms():  # MM-helpers cops_query_data; peripherals.md 1.3 names
    c = codec.parse_cops('+COPS: 0,0,"CHINA MOBILE",7')
    assert (c.mode, c.format, c.name, c.act, c.technology) == (0, 0, "CHINA MOBILE", 7, "lte")
    n = codec.parse_cops('+COPS: 1,2,"46000",7')
    assert (n.mcc, n.mnc, n.name) == ("460", "00", None)
    assert codec.parse_cops('+COPS: 1,2,"46000"').act is None
    assert codec.parse_cops('+COPS: 0,2,"342600",2').mnc == "600"
    empty = codec.parse_cops("+COPS: 0")
    assert (empty.mode, empty.oper, empty.mcc) == (0, None, None)


def test_cops_two_space_name():  # peripherals.md 1.3: "CHINA  MOBILE" seen live
    c = codec.parse_cops('+COPS: 0,0,"CHINA  MOBILE",7')
    assert c.oper == "CHINA  MOBILE" and c.name == "CHINA MOBILE"


def test_cops_ucs2_name():  # MM-helpers normalize_operator_tests (UCS2)
    assert codec.parse_cops('+COPS: 0,0,"0056006500720069007A006F006E",7').name == "Verizon"
    assert codec.parse_cops('+COPS: 0,2,"003300310031003400380030",7').mcc == "311"
    assert codec.parse_cops('+COPS: 0,0,"4E2D56FD79FB52A8",7').name == "中国移动"
    assert codec.parse_cops('+COPS: 0,1,"CMCC",7', ucs2=False).name == "CMCC"


# ---------------------------------------------------------------------------------- CREG family


@pytest.mark.parametrize(
    "line,solicited,kind,stat,lac,ci,act",
    [  # MM-helpers test_creg*/test_cgreg*/test_cereg*/test_c5greg*
        ("+CREG: 1,3", True, "CREG", 3, None, None, None),
        ("+CREG: 3", False, "CREG", 3, None, None, None),
        ("+CREG: 1,1,84CD,00D30173", True, "CREG", 1, 0x84CD, 0xD30173, None),
        ("+CREG: 1,84CD,00D30156", False, "CREG", 1, 0x84CD, 0xD30156, None),
        ('+CREG: 2,1,"CE00","01CEAD8F"', True, "CREG", 1, 0xCE00, 0x01CEAD8F, None),
        ('+CREG: 1,"CE00","00005449"', False, "CREG", 1, 0xCE00, 0x5449, None),
        ("+CREG: 2,0,00,0", True, "CREG", 0, 0, 0, None),
        ("+CREG: 2,,", False, "CREG", 2, None, None, None),
        ('+CREG:002,001,"18d8","ffff"', True, "CREG", 1, 0x18D8, 0xFFFF, None),
        ("+CREG:2,1,0001,0010", True, "CREG", 1, 1, 0x10, None),
        ("+CREG: 1,0001,0010,0", False, "CREG", 1, 1, 0x10, 0),
        ('+CREG: 001,"0001","0010",000', False, "CREG", 1, 1, 0x10, 0),
        ('+CREG: 2,6,"8B37","0A265185",7', True, "CREG", 6, 0x8B37, 0x0A265185, 7),
        ('+CREG: 6,"8B37","0A265185",7', False, "CREG", 6, 0x8B37, 0x0A265185, 7),
        ('+CGREG: 2,1,"8BE3","00002B5D",3', True, "CGREG", 1, 0x8BE3, 0x2B5D, 3),
        ('+CGREG: 5,"0502","0404736D",2', False, "CGREG", 5, 0x0502, 0x0404736D, 2),
        ('+CREG: 2,5,"0502","0404736D"', False, "CREG", 5, 0x0502, 0x0404736D, None),
        ("+CGREG: 2,1, 81ED, 1A9CEB", False, "CGREG", 1, 0x81ED, 0x1A9CEB, None),
        ("+CREG: 2,1,000B,2816, B, C2816", False, "CREG", 1, 0x000B, 0x2816, None),
        ('+CGREG: 1,"1422","00000142",3,"00"', False, "CGREG", 1, 0x1422, 0x142, 3),
        ("+CEREG: 2,1, 1F00, 79D903 ,7", True, "CEREG", 1, 0x1F00, 0x79D903, 7),
        ("+CEREG: 1, 1F00, 79D903 ,7", False, "CEREG", 1, 0x1F00, 0x79D903, 7),
        ("+CEREG: 1, 2, 0001, 00000100, 7", False, "CEREG", 2, 1, 0x100, 7),
        ("+CEREG: 2, 0001, 00000100, 7", False, "CEREG", 2, 1, 0x100, 7),
        ("+CEREG: 2,1, 1F00, 20 ,79D903 ,7", True, "CEREG", 1, 0x1F00, 0x79D903, 7),
        ("+CEREG: 1, 1F00, 20 ,79D903 ,7", False, "CEREG", 1, 0x1F00, 0x79D903, 7),
        ('+CGREG: 2, 1, "0426", "F00F"', True, "CGREG", 1, 0x0426, 0xF00F, None),
        ('+CGREG: 1, "0426", "F00F"', False, "CGREG", 1, 0x0426, 0xF00F, None),
        ("+C5GREG: 1,3", True, "C5GREG", 3, None, None, None),
        ("+C5GREG: 2,1,1F00,79D903,11,6,ABCDEF", True, "C5GREG", 1, 0x1F00, 0x79D903, 11),
        ("+C5GREG: 1,1F00,79D903,11,6,ABCDEF", False, "C5GREG", 1, 0x1F00, 0x79D903, 11),
    ],
)
def test_creg_family(line, solicited, kind, stat, lac, ci, act):
    r = codec.parse_creg(line, solicited=solicited)
    assert (r.kind, r.stat, r.lac, r.cell_id, r.act) == (kind, stat, lac, ci, act)


def test_creg_same_text_differs_by_context():  # peripherals.md 1.4: "+CREG: 1,5" is n=1, roaming when read
    assert codec.parse_creg("+CREG: 1,5", solicited=True).state == "roaming"
    assert codec.parse_creg("+CREG: 5", solicited=False).state == "roaming"


def test_creg_nr_cell_id_is_36_bits():  # peripherals.md 1.4: NR CI "0000000170C23000", use Python ints
    r = codec.parse_creg('+C5GREG: 2,1,"A1B2C3","0000000170C23000",11', solicited=True)
    assert r.cell_id == 0x170C23000 and r.lac == 0xA1B2C3


@pytest.mark.parametrize(
    "stat,state,registered",
    [(0, "not_registered", False), (1, "home", True), (2, "searching", False), (3, "denied", False),
     (4, "unknown", False), (5, "roaming", True), (6, "home_sms_only", True), (7, "roaming_sms_only", True),
     (8, "emergency_only", False), (9, "home_csfb_not_preferred", True), (10, "roaming_csfb_not_preferred", True),
     (11, "attached_rlos", False)],
)
def test_registration_states(stat, state, registered):  # 27.007 §7.2 stat values
    r = codec.parse_creg(f"+CEREG: {stat:04d}", solicited=False)  # multi-digit, zero-padded (MM corpus)
    assert (r.state, r.registered) == (state, registered)


def test_best_registration_prefers_cereg_for_data_only_sim():  # peripherals.md 1.4: CREG 0 while CEREG 1
    regs = [codec.parse_creg("+CREG: 2,0", solicited=True), codec.parse_creg('+CEREG: 2,1,"1A2B","0A1B2C3",7',
                                                                             solicited=True)]
    best = codec.best_registration(regs)
    assert best is not None and best.kind == "CEREG" and best.registered and best.technology == "lte"


def test_creg_garbage():
    with pytest.raises(ProtocolError):
        codec.parse_creg("+CSQ: 1,1", solicited=True)
    with pytest.raises(ProtocolError):
        codec.parse_creg("+CREG: x,y", solicited=True)


# ---------------------------------------------------------------------------------- CPIN / CFUN


@pytest.mark.parametrize(
    "line,state",
    [("+CPIN: READY", "ready"), ("+CPIN: SIM PIN", "pin"), ("+CPIN: SIM PUK", "puk"), ("+CPIN: SIM PUK2", "puk2"),
     ("+CPIN: SIM PIN2", "pin2"), ('+CPIN: "SIM PIN"', "pin"), ("+CPIN: PH-SIM PIN", "ph_sim_pin"),
     ("+CPIN: NOT READY", "not_ready"), ("+CPIN: NOT INSERTED", "absent"), ("+CPIN: SIM REMOVED", "absent")],
)
def test_cpin(line, state):  # 27.007 §8.3; quoted values seen on phones (peripherals.md 1.5)
    assert codec.parse_cpin(line) == state


def test_cpin_unknown():
    with pytest.raises(ProtocolError):
        codec.parse_cpin("+CPIN: BANANA")


def test_cfun():  # 27.007 §8.2
    assert codec.parse_cfun("+CFUN: 1") == 1
    assert codec.parse_cfun("+CFUN: 4,0") == 4


# ---------------------------------------------------------------------------------- vendor signal / cell


def test_qeng_lte():  # QModem field order; capture "+QENG: ...,460,11,E0B70B,374,100,1,5,5,5F0C,-80,-6,-53,30,39"
    cell = codec.parse_qeng_servingcell(
        ['+QENG: "servingcell","NOCONN","LTE","FDD",460,11,E0B70B,374,100,1,5,5,5F0C,-80,-6,-53,30,39'])
    assert (cell.technology, cell.state, cell.mcc, cell.mnc) == ("lte", "NOCONN", "460", "11")
    assert (cell.cell_id, cell.tac, cell.pci, cell.earfcn, cell.band) == (0xE0B70B, 0x5F0C, 374, 100, "1")
    assert (cell.rsrp_dbm, cell.rsrq_db, cell.rssi_dbm) == (-80.0, -6.0, -53.0)
    assert cell.sinr_raw == "30" and cell.sinr_db is None  # QENG SINR unit not verified: kept raw


def test_qeng_en_dc_multiline_and_dashes():  # peripherals.md 1.6: EN-DC splits lines, "-" = not available
    cell = codec.parse_qeng_servingcell([
        '+QENG: "servingcell","NOCONN"',
        '+QENG: "LTE","FDD",460,00,1A8D147,258,2850,7,5,5,2364,-91,-8,-,21,0,-,32',
        '+QENG: "NR5G-NSA",460,00,747,-71,31,-11,627264,78,12,1',
    ])
    assert (cell.technology, cell.state, cell.mnc, cell.tac, cell.rssi_dbm) == ("lte", "NOCONN", "00", 0x2364, None)


def test_qeng_searching():
    cell = codec.parse_qeng_servingcell(['+QENG: "servingcell","SEARCH"'])
    assert cell.state == "SEARCH" and cell.technology is None and cell.cell_id is None


def test_qcsq():  # Quectel manual: +QCSQ: "LTE",rssi,rsrp,sinr,rsrq; SINR 1/5 dB - 20
    s = codec.parse_qcsq('+QCSQ: "LTE",-52,-81,195,-10')
    assert (s.rssi_dbm, s.rsrp_dbm, s.sinr_db, s.rsrq_db) == (-52.0, -81.0, 19.0, -10.0)
    assert codec.parse_qcsq('+QCSQ: "NOSERVICE"').rsrp_dbm is None


def test_cpsi_tenths():  # QModem simcom.sh capture: current SIM7600 firmware, tenths of dB
    c = codec.parse_cpsi("+CPSI: LTE,Online,460-01,0x7496,251941991,203,EUTRAN-BAND8,3740,3,3,-92,-672,-418,14")
    assert (c.mcc, c.mnc, c.tac, c.cell_id, c.pci, c.band) == ("460", "01", 0x7496, 251941991, 203, "BAND8")
    assert (c.rsrq_db, c.rsrp_dbm, c.rssi_dbm, c.sinr_raw) == (-9.2, -67.2, -41.8, "14")


def test_cpsi_old_manual_indices():  # oFono SIMCom netmon: old manual example, 255 = unknown
    c = codec.parse_cpsi("+CPSI: LTE,Online,460-01,0x230A,175499523,318,EUTRAN-BAND3,1650,5,0,21,67,255,19")
    assert (c.rsrp_dbm, c.rsrq_db, c.rssi_dbm) == (-74.0, -9.5, None)


def test_cpsi_no_service():  # peripherals.md 1.6 "NO SERVICE,Online"
    c = codec.parse_cpsi("+CPSI: NO SERVICE,Online")
    assert c.technology is None and c.cell_id is None


def test_hcsq_wcdma_keeps_rscp_and_ecio():  # ModemManager huawei: rscp -121+v (<=96), ecio -32.5+v/2 (<=65)
    s = codec.parse_hcsq('^HCSQ: "WCDMA",30,30,58')
    assert (s.technology, s.rssi_dbm, s.rscp_dbm, s.ecio_db) == ("wcdma", -91.0, -91.0, -3.5)
    s = codec.parse_hcsq("^HCSQ: WCDMA,30,255,255")  # unquoted mode, unknown values
    assert (s.rscp_dbm, s.ecio_db) == (None, None)


def test_cpsi_wcdma_keeps_rscp_and_ecio():  # SIM7600 WCDMA line: Ec/Io and RSCP printed as magnitudes
    c = codec.parse_cpsi("+CPSI: WCDMA,Online,460-01,0xA809,11122855,WCDMA IMT 2000,279,10663,0,4.0,69,32,46,500")
    assert (c.technology, c.mcc, c.mnc, c.tac, c.cell_id) == ("wcdma", "460", "01", 0xA809, 11122855)
    assert (c.rscp_dbm, c.ecio_db) == (-69.0, -4.0)


def test_qeng_wcdma_keeps_rscp_and_ecio():  # Quectel EC2x QENG WCDMA: ..., RSCP (dBm), ecio (dB), ...
    c = codec.parse_qeng_servingcell(['+QENG: "servingcell","NOCONN","WCDMA",460,01,A809,8D9D9A5,10663,279,15,'
                                      "-85,-5,-,-,-,-,-"])
    assert (c.technology, c.tac, c.cell_id, c.rscp_dbm, c.ecio_db) == ("wcdma", 0xA809, 0x8D9D9A5, -85.0, -5.0)


def test_cme_codes_by_the_standard():  # 3GPP TS 27.007 §9.2: each code its meaning, none read as another
    assert codec.cme_meaning(10) == "SIM not inserted"
    assert codec.cme_meaning(13) == "SIM failure"
    assert codec.cme_meaning(100) == "unknown"
    assert codec.cme_meaning(3) == "operation not allowed"
    assert "not in 3GPP" in codec.cme_meaning(999)
    assert codec.SIM_FROM_CME.get(100) is None and codec.SIM_FROM_CME[13] == "error"
    assert codec.final_result("+CME ERROR: 100").text == "unknown"


def test_hcsq_lte():  # Huawei ME906 log capture '^HCSQ: "LTE",59,55,105,20'; ModemManager huawei conversions
    s = codec.parse_hcsq('^HCSQ: "LTE",59,55,105,20')
    assert (s.rssi_dbm, s.rsrp_dbm, s.sinr_db, s.rsrq_db) == (-62.0, -86.0, 0.8, -10.0)
    assert codec.parse_hcsq("^HCSQ: NOSERVICE").rsrp_dbm is None
    assert codec.parse_hcsq('^HCSQ: "LTE",255,255,255,255').rsrp_dbm is None


def test_gtccinfo():  # Fibocom AT manual block layout (peripherals.md 1.6), QModem conversions
    cell = codec.parse_gtccinfo([
        "+GTCCINFO:", "LTE service cell:", "1,4,460,00,1A2B,A1B2C3,1650,123,3,5,24,40,46,20",
        "LTE neighbor cell:", "0,4,460,00,1A2B,FFFFFFF,1650,301,3,5,0,30,38,10",
    ])
    assert (cell.technology, cell.mcc, cell.mnc, cell.tac, cell.cell_id) == ("lte", "460", "00", 0x1A2B, 0xA1B2C3)
    assert (cell.rsrp_dbm, cell.rsrq_db, cell.sinr_raw) == (-95.0, -10.0, "24")


def test_qgdcnt():  # Quectel manual: +QGDCNT: <bytes_sent>,<bytes_recv>
    c = codec.parse_qgdcnt("+QGDCNT: 3571,2057")
    assert (c.bytes_sent, c.bytes_received) == (3571, 2057)


def test_ati_forms():  # MM-helpers devids (Huawei E1550 ATI); Quectel bare-line ATI
    ident = codec.parse_ati(["Manufacturer: huawei", "Model: E1550", "Revision: 11.608.09.01.21",
                             "IMEI: 235012412595195", "+GCAP: +CGSM,+FCLASS,+DS"])
    assert (ident.manufacturer, ident.model, ident.revision) == ("huawei", "E1550", "11.608.09.01.21")
    q = codec.parse_ati(["Quectel", "EC25", "Revision: EC25EFAR06A09M4G"])
    assert (q.manufacturer, q.model, q.revision) == ("Quectel", "EC25", "EC25EFAR06A09M4G")
    assert codec.parse_text_reply(['+CGMM: "SIM7600"'], "+CGMM:") == "SIM7600"


# ---------------------------------------------------------------------------------- properties

_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=60)
_PARSERS = [
    codec.parse_csq, codec.parse_cesq, codec.parse_qcsq, codec.parse_hcsq, codec.parse_iccid, codec.parse_crsm,
    codec.parse_imei, codec.parse_imsi, codec.parse_plmn, codec.parse_cops, codec.parse_cpin, codec.parse_cfun,
    codec.parse_cpsi, codec.parse_qgdcnt, codec.parse_qinistat,
    lambda s: codec.parse_creg(s, solicited=True), lambda s: codec.parse_creg(s, solicited=False),
    lambda s: codec.parse_qeng_servingcell([s]), lambda s: codec.parse_gtccinfo(["LTE service cell:", s]),
    lambda s: codec.parse_ati([s]),
]
_PREFIXES = ["+CSQ: ", "+CESQ: ", '+QCSQ: "LTE",', '^HCSQ: "LTE",', "+QCCID: ", "+CRSM: ", "+COPS: ", "+CPIN: ",
             "+CFUN: ", "+CPSI: LTE,Online,", "+QGDCNT: ", "+CREG: ", "+CEREG: ", "+C5GREG: ",
             '+QENG: "servingcell","NOCONN","LTE",', ""]


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(_PREFIXES), body=_text)
def test_parsers_raise_only_driver_errors(prefix, body):
    for parse in _PARSERS:
        try:
            parse(prefix + body)
        except DriverError:
            pass


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(_PREFIXES), body=st.lists(st.integers(-300, 300).map(str) | st.just("") | st.just('"x"'),
                                                         max_size=20))
def test_parsers_on_numeric_fields(prefix, body):
    for parse in _PARSERS:
        try:
            parse(prefix + ",".join(body))
        except DriverError:
            pass


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=10), cmd=st.sampled_from(["", "AT", "AT+CSQ", "ATI"]))
def test_framer_never_raises(chunks, cmd):
    reader = codec.ResponseReader(cmd, ("+CSQ:",))
    for c in chunks:
        reader.feed(c)
    r = reader.response
    assert all("\r" not in line and "\n" not in line for line in r.lines + r.urcs + r.trailing)
    codec.parse_response(b"".join(chunks), cmd)
    codec.split_lines(b"".join(chunks))
