"""Every bound of the native heartbeat format, in one place (see schema/heartbeat.md).

The decoder enforces these; the encoder refuses to produce anything beyond them,
so an agent can never send what a manager would reject.
"""

from __future__ import annotations

# Datagram sizes. 1400 bytes fits one Ethernet frame through common tunnels
# (VXLAN, GRE) without IP fragmentation; beyond it a datagram is still legal up
# to the hard maximum (IP fragments it), but one lost fragment loses it all.
TARGET_DATAGRAM_BYTES = 1400
MAX_DATAGRAM_BYTES = 65000

# Counts. A datagram of MAX_DATAGRAM_BYTES holds about 3200 members at most;
# the count limits are checked independently of the size.
MAX_LISTENERS = 256
MAX_POOLS = 512
MAX_MEMBERS_PER_POOL = 1024
MAX_MEMBERS = 4096

# Structure. The layout has no strings, no maps and no extension types; the
# only binaries are 16-byte ids; arrays nest exactly five deep
# (payload > pools > pool > members > member).
MAX_STRING_BYTES = 0
ID_BYTES = 16
MAX_NESTING = 5
# The largest array the layout can contain (guards msgpack's own parser).
MAX_ARRAY_LEN = max(MAX_LISTENERS, MAX_POOLS, MAX_MEMBERS_PER_POOL)

# Integer ranges (inclusive).
MAX_UINT64 = 2**64 - 1
MAX_STATUS_CODE = 255  # codes are uint8; unknown codes inside it decode to OTHER
MIN_INTERVAL_MS = 1
MAX_INTERVAL_MS = 3_600_000
MAX_KEY_ID = 2**16 - 1  # uint16 in the header; the config allows 0..65535

# Replay and freshness defaults (the manager may configure its own bounds).
REPLAY_WINDOW = 64
DEFAULT_MAX_AGE_MS = 30_000
DEFAULT_MAX_FUTURE_MS = 10_000

# Sequence reservation: numbers reserved (persisted) per write of the agent's file.
DEFAULT_SEQ_BLOCK = 1000
