/* The dashboard's one table of labels for the codes the server and the terminals emit (alert kinds and their
   messages, peripheral names, reason codes and the drivers' check reasons, carriers, security events).
   The object given to LABELS is JSON: tests/dashboard/test_labels.py reads it and checks
   that every code, enumerated from where it is made, has a Chinese label here.
   "check.X" a peripheral, "reason.X" a reason code or a driver's reason text, "prefix.X" the start of a driver's
   reason text that goes on with details, "carrier.X" a carrier, "kind.X" an alert kind, "alert.X" an alert's
   message ({placeholders} filled from its data), "security.X" what a security alert is about. */
"use strict";
const LABELS = {
  "zh": {
    "check.printer": "打印机", "check.idcard": "身份证读卡器", "check.modem": "4G 模块", "check.storage": "存储",
    "reason.missing": "无检测结果", "reason.unknown": "状态未知", "reason.fault": "故障",
    "reason.link_down": "断网", "reason.latency": "时延超标", "reason.rtt": "时延 {ms} ms",
    "reason.no_data": "无数据", "reason.device_fault": "设备故障", "reason.network": "网络异常",
    "reason.link_down_carrier_outage": "断网（疑似运营商故障）",
    "reason.paper_out": "缺纸", "reason.cover_open": "纸仓盖打开", "reason.reader_fault": "读卡器故障",
    "reason.sim_missing": "未检测到 SIM 卡",
    "reason.SAM self-test failed": "安全模块自检失败", "reason.SAM not answering": "安全模块无响应",
    "reason.modem port not found": "未找到模块串口", "reason.modem not answering": "模块无响应",
    "reason.modem answers garbage": "模块应答乱码",
    "reason.cover open": "纸仓盖打开", "reason.paper out": "缺纸", "reason.cutter error": "切刀故障",
    "reason.unrecoverable error": "不可恢复的错误", "reason.printer offline": "打印机离线",
    "reason.printer port unavailable": "打印机端口不可用", "reason.printer not answering": "打印机无响应",
    "reason.SIM not inserted": "未插 SIM 卡", "reason.SIM PIN required": "需要 SIM PIN 码",
    "reason.SIM PUK required": "需要 SIM PUK 码", "reason.SIM PIN2 required": "需要 SIM PIN2 码",
    "reason.SIM PUK2 required": "需要 SIM PUK2 码", "reason.PH-SIM PIN required": "需要机卡锁 PIN 码",
    "reason.network personalization PIN required": "需要网络锁 PIN 码",
    "reason.network personalization PUK required": "需要网络锁 PUK 码",
    "reason.SIM failure": "SIM 卡故障", "reason.SIM wrong": "SIM 卡错误", "reason.SIM not ready": "SIM 卡未就绪",
    "reason.SIM state unknown": "SIM 卡状态未知",
    "prefix.SAM status ": "安全模块状态 ", "prefix.port missing: ": "端口不存在：",
    "prefix.reader protocol error: ": "读卡器通信协议错误：", "prefix.modem check failed: ": "模块检测失败：",
    "prefix.printer error (": "打印机错误（", "prefix.SIM state unknown (": "SIM 卡状态未知（",
    "prefix.SIM state ": "SIM 卡状态 ", "prefix.not found at ": "未找到设备：",
    "prefix.data dir not writable: ": "数据目录不可写：",
    "carrier.China Mobile": "中国移动", "carrier.China Unicom": "中国联通", "carrier.China Telecom": "中国电信",
    "carrier.China Broadnet": "中国广电", "carrier.unknown": "未知运营商",
    "carrier.CMCC": "中国移动", "carrier.CUCC": "中国联通", "carrier.CTCC": "中国电信", "carrier.CHN-UNICOM": "中国联通",
    "carrier.CHN-CT": "中国电信", "carrier.中国移动": "中国移动", "carrier.中国联通": "中国联通", "carrier.中国电信": "中国电信",
    "kind.flagged": "低于阈值", "kind.offline": "离线", "kind.fault": "外设故障", "kind.storage": "存储将满",
    "kind.sim_changed": "SIM 卡更换", "kind.carrier_outage": "疑似运营商故障", "kind.sim_data": "SIM 流量",
    "kind.security": "安全",
    "alert.flagged": "{sn} 本月低于 {threshold}：完好率 {device}，网络可用率 {network}",
    "alert.offline": "{sn} 在服务时段内离线 {minutes} 分钟",
    "alert.fault": "{sn}：{check}故障{reason}",
    "alert.storage": "{sn}：{mount} 已用 {pct}%",
    "alert.sim_changed": "{sn}：SIM 卡已更换（ICCID {old} → {new}）",
    "alert.carrier_outage": "{place}疑似运营商故障：{units} 台终端同时断网{minutes}",
    "alert.sim_data": "{sn}：本月 SIM 流量 {used} MB，已达 {plan} MB 套餐的 {pct}%（预计 {projected} MB）",
    "alert.security": "{sn} 安全告警：{what}",
    "security.certificate_shared": "会话反复被顶替：证书可能被复制到其他机器使用（或链路反复中断）",
    "security.identity_mismatch": "上报数据的终端编号与其证书不符",
    "security.flood": "上报超出流量限额",
    "minutes": "{n} 分钟", "cell": "基站 {cell}"
  },
  "en": {
    "check.printer": "printer", "check.idcard": "ID card reader", "check.modem": "modem", "check.storage": "storage",
    "reason.link_down": "link down", "reason.latency": "latency", "reason.rtt": "round trip {ms} ms",
    "reason.no_data": "no data", "reason.device_fault": "device fault", "reason.network": "network",
    "reason.link_down_carrier_outage": "link down (likely carrier outage)",
    "kind.flagged": "flagged", "kind.offline": "offline", "kind.fault": "fault", "kind.storage": "storage",
    "kind.sim_changed": "SIM changed", "kind.carrier_outage": "carrier outage", "kind.sim_data": "SIM data",
    "kind.security": "security",
    "alert.flagged": "{sn} below {threshold} this month: device {device}, network {network}",
    "alert.offline": "{sn} offline for {minutes} min of service hours",
    "alert.fault": "{sn}: {check} fault{reason}",
    "alert.storage": "{sn}: {mount} {pct}% full",
    "alert.sim_changed": "{sn}: SIM changed (ICCID {old} -> {new})",
    "alert.carrier_outage": "likely carrier outage {place}: {units} units lost the link together{minutes}",
    "alert.sim_data": "{sn}: SIM data {used} MB this month, {pct}% of the {plan} MB plan (projected {projected} MB)",
    "alert.security": "{sn}: {what}",
    "minutes": "{n} min", "cell": "cell site {cell}"
  }
};
