"""Second-generation resident ID card reader (GA 467 SAM protocol).

``codec`` (pure frames, text blocks, ID checks), ``mask`` (the one redactor) and
``device`` (:class:`IdCardReader` over a pyserial URL). Only masked card data leaves
this package; the photo is never decoded.
"""

from .device import IdCardProfile, IdCardReader, load_profile
from .mask import MaskedCard, RedactingFilter, mask_address, mask_id, mask_name, redact_text

__all__ = [
    "IdCardProfile",
    "IdCardReader",
    "MaskedCard",
    "RedactingFilter",
    "load_profile",
    "mask_address",
    "mask_id",
    "mask_name",
    "redact_text",
]
