"""The wire protocol shared by agent and server: topics, message schemas, encoding, signing."""

PROTOCOL_VERSION = 1

# The version of this code: what the agent reports and an agent release is signed as (wire.package.VERSION_FILE:
# the stager of a release rewrites this line). ``posfleet.__version__`` is the same value.
__version__ = "0.1.0"
