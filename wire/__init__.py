"""The wire protocol shared by agent and server: topics, message schemas, encoding, signing."""

PROTOCOL_VERSION = 1
