"""4G modem driver: pure AT codec (:mod:`.codec`) and the device API (:mod:`.device`)."""

from .device import (
    ATError,
    Modem,
    ModemProfile,
    ModemStatus,
    OperatorInfo,
    RegistrationInfo,
    SignalInfo,
    assess,
    load_profile,
)

__all__ = [
    "ATError",
    "Modem",
    "ModemProfile",
    "ModemStatus",
    "OperatorInfo",
    "RegistrationInfo",
    "SignalInfo",
    "assess",
    "load_profile",
]
