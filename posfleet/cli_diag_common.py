"""What every ``posfleet diag`` command shares.

* The language of the output: ``--lang zh|en`` (or ``POSFLEET_LANG``), Chinese by default like the dashboard.
  Every label is in :data:`LABELS`, one table, both languages side by side (a test checks each key has both and
  the same ``{placeholders}``). ``--json`` keys and values are language-neutral (English field names, raw codes).
* The exit codes: one table (:data:`EXIT_TEXT`) printed in every command's help and one mapping from a driver
  error to its code (:func:`drivers.errors.exit_code`, shared with ``drivers/capture.py``).
* The verdict: :func:`finish` sets ``"ok"`` and ``"exit_code"`` of the JSON from the exit code it exits with,
  so the two cannot disagree.
* Progress on stderr while a device is slow to answer (:class:`Progress`), so ``--json`` on stdout stays clean.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import click

from drivers.errors import EXIT_FAULT, EXIT_NOT_FOUND, EXIT_OK, EXIT_PROTOCOL, EXIT_TIMEOUT

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_ENV = "POSFLEET_LANG"

EXIT_FAILED = 1  # console: the command ran and failed; capture: the files could not be written
EXIT_USAGE = 2
EXIT_REFUSED = 7  # console: the command needs a valid engineer credential

__all__ = ["EXIT_FAILED", "EXIT_FAULT", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_PROTOCOL", "EXIT_REFUSED", "EXIT_TIMEOUT",
           "EXIT_USAGE", "LABELS", "Progress", "exit_help", "finish", "lang_option", "say"]

# key -> (Chinese, English). Placeholders in braces are filled by say(); both texts must name the same ones.
LABELS: dict[str, tuple[str, str]] = {
    # verdicts and shared words
    "verdict.ok": ("正常", "OK"),
    "verdict.fault": ("故障", "FAULT"),
    "verdict.unknown": ("无法检查", "UNKNOWN"),
    "verdict.because": ("{state}：{reason}", "{state}: {reason}"),
    "word.error": ("错误", "error"),
    "word.hint": ("提示", "hint"),
    "word.yes": ("是", "yes"),
    "word.no": ("否", "no"),
    "word.none": ("-", "-"),
    "kind.modem": ("4G 模块", "modem"),
    "kind.printer": ("打印机", "printer"),
    "kind.idcard": ("身份证读卡器", "ID card reader"),
    "kind.storage": ("存储", "storage"),
    "progress.waiting": ("等待{device}回答 {command}：已等 {waited} 秒，最多等 {limit} 秒",
                         "waiting for the {device} to answer {command}: {waited} s so far, at most {limit} s"),
    # exit codes (help of every diag command)
    "exit.title": ("退出码", "Exit codes"),
    "exit.0": ("通过：设备应答且正常", "pass: the device answers and is healthy"),
    "exit.1": ("运行失败（远程命令执行失败；capture 写不了文件）",
               "failed (the console command ran and failed; capture could not write its files)"),
    "exit.2": ("用法错误（未知配置、选项错误）", "bad usage (unknown profile, bad option)"),
    "exit.3": ("找不到设备：端口不存在、被占用或无权限", "device not found: port missing, busy or no permission"),
    "exit.4": ("超时：设备不应答", "timeout: the device does not answer"),
    "exit.5": ("协议错误：应答无法解析，或该固件配置不支持所问的功能",
               "protocol error: the answer cannot be parsed, or the profile lacks what was asked"),
    "exit.6": ("故障：设备应答并报告故障（无 SIM 卡、缺纸、SAM 错误……；远程自检/网络检查发现故障）",
               "fault: the device answers and reports a fault (no SIM, paper out, SAM error, ...; "
               "remote selftest/netcheck found one)"),
    "exit.7": ("被拒绝：该命令需要有效的工程师凭证", "refused: the command needs a valid engineer credential"),
    # diag modem
    "modem.title": ("4G 模块 {port}（固件配置 {profile}{how}）：{verdict}",
                    "modem on {port} (profile {profile}{how}): {verdict}"),
    "modem.how.detected": ("，按型号自动选择", ", chosen from its model"),
    "modem.how.fallback": ("，型号未识别", ", model not recognised"),
    "modem.model": ("型号", "model"),
    "modem.model.value": ("{manufacturer} {model}，固件 {firmware}", "{manufacturer} {model}, firmware {firmware}"),
    "modem.imei": ("IMEI", "IMEI"),
    "modem.sim": ("SIM 卡", "SIM"),
    "modem.sim_error": ("SIM 查询应答 +CME ERROR: {code}（{meaning}）", "SIM query answered +CME ERROR: {code} ({meaning})"),
    "modem.iccid": ("ICCID", "ICCID"),
    "modem.imsi": ("IMSI", "IMSI"),
    "modem.operator": ("运营商", "operator"),
    "modem.registration": ("网络注册", "registration"),
    "modem.registration.value": ("{state}（{source}，{technology}，TAC {tac}，小区 {cell}）",
                                 "{state} via {source}, {technology}, TAC {tac}, cell {cell}"),
    "modem.signal": ("信号", "signal"),
    "modem.data": ("流量计数", "data"),
    "modem.data.value": ("发送 {sent} B，接收 {received} B", "sent {sent} B, received {received} B"),
    "modem.hint.unknown_model": (
        "型号应答（{answer}）不属于任何固件配置，已按通用 3GPP 配置 generic-3gpp 检查，ICCID 等厂商命令可能读不到。"
        "可用配置：{profiles}。请用 --profile 名称 指定，例如 --profile {example}。",
        "the model's answer ({answer}) matches no firmware profile; checked with the generic 3GPP profile "
        "generic-3gpp, so vendor commands such as the ICCID may give nothing. Profiles: {profiles}. "
        "Choose one with --profile NAME, e.g. --profile {example}."),
    "modem.hint.no_iccid": (
        "SIM 卡就绪但未读到 ICCID：固件配置 {profile} 的 ICCID 命令没有结果。可用配置：{profiles}；用 --profile 名称 指定。",
        "the SIM is ready but no ICCID was read: profile {profile}'s ICCID command gave nothing. "
        "Profiles: {profiles}; choose one with --profile NAME."),
    # diag printer
    "printer.ok": ("打印机正常：{desc}", "printer ok: {desc}"),
    "printer.fault": ("打印机故障：{reason}（{desc}）", "printer FAULT: {reason} ({desc})"),
    "printer.fault.plain": ("打印机故障：{reason}", "printer FAULT: {reason}"),
    "printer.not_found": ("找不到打印机：{error}", "printer NOT FOUND: {error}"),
    "printer.timeout": ("打印机无应答：{error}", "printer NOT ANSWERING: {error}"),
    "printer.protocol": ("打印机协议错误：{error}", "printer PROTOCOL ERROR: {error}"),
    "printer.online": ("在线", "online"),
    "printer.offline": ("离线", "offline"),
    "printer.paper": ("纸张{paper}", "paper {paper}"),
    "printer.cover_open": ("纸仓盖打开", "cover open"),
    "printer.cover_closed": ("纸仓盖关闭", "cover closed"),
    "printer.errors": ("错误：{errors}", "errors: {errors}"),
    "printer.test_page": ("已打印测试页", "test page printed"),
    "paper.ok": ("充足", "ok"),
    "paper.near_end": ("将尽", "near_end"),
    "paper.out": ("用完", "out"),
    # diag idcard
    "idcard.sam_status": ("SAM 状态：{state}", "SAM status: {state}"),
    "idcard.sam_error": ("SAM 错误：{reason}（SW3 {sw3}）", "SAM error:  {reason} (SW3 {sw3})"),
    "idcard.sam_id": ("SAM 编号：{sam_id}", "SAM ID:     {sam_id}"),
    "idcard.card": ("卡片：{type} {name} {id}", "card:       {type} {name} {id}"),
    "idcard.card.not_tried": ("卡片：未尝试（SAM 不正常）", "card:       not tried (SAM not OK)"),
    "idcard.card.none": ("卡片：读卡器上没有卡（放上卡片；读过一次后需拿起再放上）",
                         "card:       none on the reader (place a card; lift and re-place after a read)"),
    "idcard.pass": ("通过", "PASS"),
    "idcard.fail": ("未通过：{reason}", "FAIL: {reason}"),
    # diag capture
    "capture.title": ("{kind} {port}（固件配置 {profile}）：{verdict}", "{kind} on {port} (profile {profile}): {verdict}"),
    "capture.error": ("  错误：{error}", "  error: {error}"),
    "capture.saved": ("已记录 {requests} 个请求、{events} 个事件（已脱敏）到 {out}",
                      "captured {requests} requests, {events} events (redacted) to {out}"),
    # diag remote / connect: the console's replies
    "console.failed": ("{code}：{error}", "{code}: {error}"),
    "console.terminal": ("终端", "terminal"),
    "console.county": ("县区", "county"),
    "console.agent": ("代理版本", "agent"),
    "console.clock": ("时钟", "clock"),
    "console.clock.checked": ("已校准", "checked"),
    "console.clock.unchecked": ("未校准", "NOT checked"),
    "console.link": ("链路", "link"),
    "console.link.connected": ("已连接 {host}:{port}", "connected to {host}:{port}"),
    "console.link.disconnected": ("未连接 {host}:{port}", "DISCONNECTED from {host}:{port}"),
    "console.link.last_error": ("（最近错误：{error}）", " (last error: {error})"),
    "console.outbox": ("待发队列", "outbox"),
    "console.outbox.value": ("{count} 条等待，最早 {oldest}", "{count} waiting, oldest {oldest}"),
    "console.outbox.age": ("（{age}前）", " ({age} ago)"),
    "console.outbox.error": ("；错误 {error}", "; ERROR {error}"),
    "console.checks.none": ("检查：尚未采样", "checks: no sample taken yet"),
    "console.last_errors": ("最近错误：", "last errors:"),
    "console.col.check": ("检查项", "check"),
    "console.col.state": ("状态", "state"),
    "console.col.reason": ("原因", "reason"),
    "console.col.peripheral": ("外设", "peripheral"),
    "console.col.detail": ("详情", "detail"),
    "console.col.step": ("步骤", "step"),
    "console.col.ok": ("通过", "ok"),
    "console.col.command": ("命令", "command"),
    "console.col.needs": ("需要", "needs"),
    "console.col.what": ("说明", "what"),
    "console.col.seq": ("序号", "seq"),
    "console.col.kind": ("类型", "kind"),
    "console.col.time": ("时间", "time"),
    "console.col.age": ("已等", "age"),
    "console.col.bytes": ("字节", "bytes"),
    "console.col.held": ("暂扣", "held"),
    "console.col.in_flight": ("发送中", "in flight"),
    "console.needs.credential": ("凭证", "credential"),
    "console.selftest.test_page": ("测试页 {result}", "test page {result}"),
    "console.selftest.sam": ("SAM {state} {sam_id}", "SAM {state} {sam_id}"),
    "console.selftest.card": ("卡片 {type}：{name} {id}", "card {type}: {name} {id}"),
    "console.selftest.no_card": ("读卡器上没有卡", "no card on the reader"),
    "console.selftest.modem": ("SIM {sim}，{operator}，CSQ {csq}", "SIM {sim}, {operator}, CSQ {csq}"),
    "console.verdict.all_ok": ("全部正常", "all ok"),
    "console.verdict.network_ok": ("网络正常", "network ok"),
    "console.verdict.problems": ("有问题：{what}", "problems: {what}"),
    "console.net.modem": ("SIM {sim}，{model} {firmware}，IMEI {imei}", "SIM {sim}, {model} {firmware}, IMEI {imei}"),
    "console.net.operator": ("运营商 {name}（{mcc_mnc}，{carrier}）", "operator {name} ({mcc_mnc}, {carrier})"),
    "console.net.sim": ("SIM {state}", "SIM {state}"),
    "console.net.registration": ("{state}，{technology}，TAC {tac}，小区 {cell}",
                                 "{state}, {technology}, TAC {tac}, cell {cell}"),
    "console.net.dns": ("{host} → {addresses}，{ms} ms", "{host} -> {addresses}, {ms} ms"),
    "console.net.tcp": ("{peer}，连接 {ms} ms", "{peer}, connect {ms} ms"),
    "console.net.tls": ("{version}，握手 {ms} ms，终端证书{accepted}", "{version}, handshake {ms} ms, certificate {accepted}"),
    "console.net.tls.accepted": ("被接受", "accepted"),
    "console.net.tls.refused": ("被拒绝", "REFUSED"),
    "console.net.tls.unknown": ("结果未知", "not known"),
    "console.net.link": ("{state}，往返 {rtt} ms", "{state}, round trip {rtt} ms"),
    "console.net.link.up": ("已连接", "connected"),
    "console.net.link.down": ("未连接", "not connected"),
    "console.step.modem": ("4G 模块", "modem"),
    "console.step.sim": ("SIM 卡", "sim"),
    "console.step.registration": ("网络注册", "registration"),
    "console.step.signal": ("信号", "signal"),
    "console.step.dns": ("域名解析", "dns"),
    "console.step.tcp": ("TCP 连接", "tcp"),
    "console.step.tls": ("TLS 握手", "tls"),
    "console.step.link": ("MQTT 链路", "link"),
    "console.parse.empty": ("命令为空", "empty command"),
    "console.parse.unknown": ("未知命令 {command}；`help` 列出全部命令", "unknown command {command}; `help` lists them"),
    "console.parse.config_set": ("用法：config set 键 值 [minutes=N]", "usage: config set KEY VALUE [minutes=N]"),
    "console.parse.option": ("{word}：选项写作 名称=值", "{word}: options are NAME=VALUE"),
    "console.parse.file": ("{key}：读不了 {file}：{error}", "{key}: cannot read {file}: {error}"),
    "console.logs.foot": ("（显示 {shown} 行，共 {matching} 行匹配；终端保留最近 {kept} 行）",
                          "({shown} of {matching} matching lines; the terminal keeps the last {kept})"),
    "console.config.pending": ("待确认的修改（连不上服务器则回滚）：", "pending change (rolled back unless the server is reached): "),
    "console.outbox.head": ("{count} 条等待，最早 {oldest}", "{count} entries waiting, oldest {oldest}"),
    "console.shell.connected": (
        "已连接终端 {sn}{county}，代理版本 {version}；会话 {session}（空闲 {idle} 分钟后关闭）。输入 `help` 查看命令。",
        "connected to terminal {sn}{county}, agent {version}; session {session} (closed after {idle} min idle). "
        "`help` lists the commands."),
    "console.shell.county": ("，县区 {county}", ", county {county}"),
    "console.shell.help": ("\n本机命令：auth 文件（加载工程师凭证）、json（切换 JSON 输出）、quit（退出）",
                           "\nshell: auth FILE (load an engineer credential), json (toggle JSON output), quit"),
    "console.shell.auth_usage": ("用法：auth 文件", "usage: auth FILE"),
    "console.shell.refused": ("被拒绝：{error}", "refused: {error}"),
    "console.shell.authenticated": ("已认证为 {engineer}（县区 {scope}）", "authenticated as {engineer} (counties {scope})"),
    "console.shell.json": ("JSON 输出{state}", "JSON output {state}"),
    "console.shell.json.on": ("已开启", "on"),
    "console.shell.json.off": ("已关闭", "off"),
}

# What the drivers and the terminal say (check reasons, states), in Chinese; shown as given in English.
# A reason not listed here is shown as the device or terminal gave it.
REASONS_ZH: dict[str, str] = {
    "SIM not inserted": "未插入 SIM 卡",
    "SIM PIN required": "SIM 卡需要 PIN 码",
    "SIM PUK required": "SIM 卡需要 PUK 码",
    "SIM PIN2 required": "SIM 卡需要 PIN2 码",
    "SIM PUK2 required": "SIM 卡需要 PUK2 码",
    "PH-SIM PIN required": "需要 PH-SIM PIN 码",
    "network personalization PIN required": "需要网络锁 PIN 码",
    "network personalization PUK required": "需要网络锁 PUK 码",
    "SIM failure": "SIM 卡故障",
    "SIM wrong": "SIM 卡错误",
    "SIM not ready": "SIM 卡未就绪",
    "SIM state unknown": "SIM 卡状态未知",
    "modem port not found": "找不到 4G 模块端口",
    "modem not answering": "4G 模块无应答",
    "modem answers garbage": "4G 模块应答无法解析",
    "printer port unavailable": "打印机端口不可用",
    "printer not answering": "打印机无应答",
    "reader port not found": "找不到读卡器端口",
    "reader protocol error": "读卡器协议错误",
    "SAM not answering": "SAM 无应答",
    "SAM fault": "SAM 故障",
    "SAM self-test failed": "SAM 自检失败",
    "paper out": "缺纸",
    "paper near end": "纸将用完",
    "cover open": "纸仓盖打开",
    "printer offline": "打印机离线",
    "ready": "就绪",
    "absent": "未插入",
    "not_ready": "未就绪",
    "unknown": "未知",
    "home": "本地网络",
    "roaming": "漫游",
    "searching": "搜索中",
    "denied": "被拒绝",
    "not_registered": "未注册",
    "ok": "正常",
    "fault": "故障",
}


def say(lang: str, key: str, **values: Any) -> str:
    """The label ``key`` in ``lang`` with its placeholders filled."""
    zh, en = LABELS[key]
    return (zh if lang == "zh" else en).format(**values)


def reason(lang: str, text: str | None) -> str:
    """A reason or state the drivers or the terminal gave, in ``lang`` when it is a known one.

    A known reason followed by detail in parentheses keeps the detail ("SIM state unknown (+CME ERROR: 100 ...)")."""
    if not text:
        return "-"
    if lang != "zh":
        return text
    if text in REASONS_ZH:
        return REASONS_ZH[text]
    head, sep, rest = text.partition(" (")
    if sep and head in REASONS_ZH:
        return f"{REASONS_ZH[head]}（{rest.rstrip(')')}）"
    return text


def lang_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--lang", type=click.Choice(LANGS), default=DEFAULT_LANG, envvar=LANG_ENV, show_default=True,
                        show_envvar=True, help="输出语言 / language of the output: zh 中文, en English")(f)


def exit_help(codes: Iterable[int], **meaning: str) -> str:
    """The exit-code section of a command's help, both languages, from :data:`LABELS`; ``meaning`` overrides
    a code's English text for this command (``c0="pass: ..."``), its Chinese text stays the common one."""
    lines = ["\b", f"{LABELS['exit.title'][0]} / {LABELS['exit.title'][1]}:"]
    for code in codes:
        zh, en = LABELS[f"exit.{code}"]
        lines.append(f"  {code}  {zh}")
        lines.append(f"     {meaning.get(f'c{code}', en)}")
    return "\n".join(lines)


def finish(out: dict[str, Any], code: int, *, as_json: bool, lines: Callable[[], Iterable[str]],
           err_lines: Callable[[], Iterable[str]] | None = None) -> NoReturn:
    """Print the result and exit with ``code``. The JSON's ``ok`` and ``exit_code`` are set here from ``code``:
    the one place that decides both, so ``"ok": true`` never comes with a failing exit code."""
    out["ok"] = code == EXIT_OK
    out["exit_code"] = code
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        for line in lines():
            click.echo(line)
        for line in (err_lines() if err_lines is not None else ()):
            click.echo(line, err=True)
    sys.exit(code)


class Progress:
    """``Modem.on_wait`` for a person watching: after ``first`` seconds without an answer, one line on stderr
    naming the command and how long it will wait at most, then one every ``every`` seconds."""

    def __init__(self, lang: str, device: str, *, first: float = 1.0, every: float = 3.0,
                 echo: Callable[[str], None] | None = None) -> None:
        self.lang, self.device, self.first, self.every = lang, device, first, every
        self._echo = echo or (lambda text: click.echo(text, err=True))
        self._last: tuple[str, float] | None = None  # (command, when it was last reported)

    def __call__(self, command: str, waited: float, limit: float) -> None:
        if waited < self.first:
            return
        now = time.monotonic()
        if self._last is not None and self._last[0] == command and now - self._last[1] < self.every:
            return
        self._last = (command, now)
        self._echo(say(self.lang, "progress.waiting", device=say(self.lang, f"kind.{self.device}"), command=command,
                       waited=f"{waited:.0f}", limit=f"{limit:g}"))
