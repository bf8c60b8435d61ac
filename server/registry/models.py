"""Registry records: institutions and units, their vocabularies (with the Chinese words administrators use)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from counting.hours import ServiceHours

InstitutionType = Literal["health_centre", "village_clinic", "community_site", "community_health_centre",
                          "community_health_station", "hospital", "pharmacy", "insurance_office"]
# The institution's level (等级, issue 18): the administrative tier it serves at, which the tender's coverage and the
# bureau's statistics group by. Optional ("": not given). Decision 028 ("Institution levels") says why these five.
LevelCode = Literal["provincial", "prefectural", "county_level", "township", "village"]
InstitutionLevel = Literal["", "provincial", "prefectural", "county_level", "township", "village"]
LEVELS: tuple[str, ...] = ("provincial", "prefectural", "county_level", "township", "village")
Status = Literal["in_service", "spare", "in_repair", "retired"]
StockType = Literal["deployed", "spare"]
LinkType = Literal["wired", "4g_vpdn"]

# Words seen in administrators' spreadsheets -> the registry's codes.
ALIASES: dict[str, dict[str, str]] = {
    "type": {"乡镇卫生院": "health_centre", "卫生院": "health_centre", "村卫生室": "village_clinic",
             "卫生室": "village_clinic", "社区卫生服务站": "community_health_station", "社区站": "community_health_station",
             "社区卫生服务中心": "community_health_centre", "社区中心": "community_health_centre", "社区点": "community_site",
             "医院": "hospital", "药店": "pharmacy", "零售药店": "pharmacy", "医保经办机构": "insurance_office",
             "经办机构": "insurance_office"},
    "status": {"在用": "in_service", "在役": "in_service", "备用": "spare", "备机": "spare", "维修": "in_repair",
               "送修": "in_repair", "维修中": "in_repair", "报废": "retired", "停用": "retired"},
    "stock_type": {"已部署": "deployed", "部署": "deployed", "在用": "deployed", "备机": "spare", "备用": "spare"},
    # the level's words, and the institution kinds people write in that column for the level they stand for
    "level": {"省级": "provincial", "省": "provincial", "省属": "provincial", "市级": "prefectural", "地市级": "prefectural",
              "市": "prefectural", "地级": "prefectural", "县级": "county_level", "县": "county_level",
              "县区级": "county_level", "区县级": "county_level", "县级医院": "county_level",
              "乡镇（街道）级": "township", "乡镇(街道)级": "township", "乡镇级": "township", "乡镇": "township",
              "街道": "township", "乡级": "township", "乡镇卫生院": "township", "社区卫生服务中心": "township",
              "村（社区）级": "village", "村(社区)级": "village", "村级": "village", "村": "village", "社区": "village",
              "村卫生室": "village", "社区卫生服务站": "village"},
    "link_type": {"有线": "wired", "有线专网": "wired", "医保专网": "wired", "4g": "4g_vpdn", "4G": "4g_vpdn",
                  "vpdn": "4g_vpdn", "VPDN": "4g_vpdn", "4G VPDN": "4g_vpdn", "无线": "4g_vpdn"},
}

LABELS_ZH: dict[str, str] = {
    "health_centre": "乡镇卫生院", "village_clinic": "村卫生室", "community_site": "社区服务点",
    "community_health_centre": "社区卫生服务中心", "community_health_station": "社区卫生服务站", "hospital": "医院",
    "pharmacy": "药店", "insurance_office": "医保经办机构", "in_service": "在用", "spare": "备用", "in_repair": "维修",
    "retired": "报废", "deployed": "已部署", "wired": "有线专网", "4g_vpdn": "4G VPDN",
    "provincial": "省级", "prefectural": "市级", "county_level": "县级", "township": "乡镇（街道）级",
    "village": "村（社区）级",
}


class FieldError(ValueError):
    """A request the server cannot carry out; ``field`` names the culprit, ``status`` is the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def _alias(field: str, value: Any) -> Any:
    if isinstance(value, str):
        v = value.strip()
        return ALIASES.get(field, {}).get(v, v.lower().replace(" ", "_") if v.isascii() else v)
    return value


def hours_text(value: str | dict[str, str] | None) -> str:
    """Service hours as stored: ``"08:00-18:00"`` or ``"mon-fri=08:00-17:30;sat=08:00-12:00"``; '' = default."""
    if not value:
        return ""
    if isinstance(value, str):
        return value.strip()
    return ";".join(f"{k}={v}" for k, v in value.items())


def hours_value(text: str) -> str | dict[str, str] | None:
    """Inverse of :func:`hours_text` (also accepts a JSON object)."""
    text = (text or "").strip()
    if not text:
        return None
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("hours: expected an object of weekday ranges")
        return {str(k): str(v) for k, v in data.items()}
    if "=" not in text:
        return text
    out: dict[str, str] = {}
    for part in text.replace("；", ";").split(";"):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not DAYS=HH:MM-HH:MM")
        out[key.strip()] = val.strip()
    return out


def parse_hours(text: str, tz: str) -> ServiceHours | None:
    value = hours_value(text)
    return None if value is None else ServiceHours.parse(value, tz)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Institution(_Strict):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    county: str = Field("", max_length=100)
    region: str = Field("", max_length=100)
    type: InstitutionType = "village_clinic"
    hours: str = Field("", max_length=300, description='"08:00-18:00" or "mon-fri=08:00-17:30;sat=08:00-12:00"')
    contact: str = Field("", max_length=200)
    level: InstitutionLevel = Field("", description="provincial (省级), prefectural (市级), county_level (县级), "
                                                    "township (乡镇（街道）级), village (村（社区）级), or empty: not given")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        return _alias("type", v)

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        if v is None:
            return ""
        code = _alias("level", v)
        if code not in ("", *LEVELS):
            raise ValueError(f"not a level: {v!r} (one of " + ", ".join(f"{LABELS_ZH[c]} {c}" for c in LEVELS) + ")")
        return code

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: Any) -> str:
        text = hours_text(v) if isinstance(v, dict | str) or v is None else v
        try:
            parse_hours(text, "UTC")
        except ValueError as err:
            raise ValueError(str(err)) from err
        return text


class UnitRecord(_Strict):
    sn: str = Field(min_length=4, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    insurance_sn: str = Field("", max_length=64)
    terminal_type: str = Field("", max_length=64)
    model: str = Field("", max_length=64)
    vendor: str = Field("", max_length=100)
    institution: str | None = Field(None, max_length=64)
    stock_type: StockType = "deployed"
    status: Status = "in_service"
    link_type: LinkType = "4g_vpdn"
    note: str = Field("", max_length=500)

    @field_validator("stock_type", "status", "link_type", mode="before")
    @classmethod
    def _codes(cls, v: Any, info: Any) -> Any:
        return _alias(info.field_name, v)

    @field_validator("institution", mode="before")
    @classmethod
    def _inst(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v


class UnitPatch(_Strict):
    """A partial update of a registered unit (status goes through the status endpoint to keep its history)."""

    insurance_sn: str | None = Field(None, max_length=64)
    terminal_type: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=64)
    vendor: str | None = Field(None, max_length=100)
    institution: str | None = Field(None, max_length=64)
    stock_type: StockType | None = None
    link_type: LinkType | None = None
    note: str | None = Field(None, max_length=500)

    @field_validator("insurance_sn", "terminal_type", "model", "vendor", "stock_type", "link_type", "note")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:  # only the institution can be emptied (null); the others are left out to be kept
            raise ValueError("may not be null (leave the field out to keep its value)")
        return v


class StatusChange(_Strict):
    status: Status
    note: str = Field("", max_length=500)
    at: str | None = Field(None, max_length=40, description="when: a day (2026-10-01), a local time in the fleet's "
                           "zone (2026-10-01T08:00) or ISO 8601 with offset (2026-10-01T08:00:00+08:00); default now")

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        return _alias("status", v)


class Swap(_Strict):
    spare_sn: str = Field(min_length=4, max_length=32)
    note: str = Field("", max_length=500)
