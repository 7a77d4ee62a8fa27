"""The control-plane daemon's moving parts.

receiver (UDP -> verified heartbeats), view (topology cache + status rules
applied in memory), writer (one batched transaction per flush), checker
(stale detection, circuit breaker) and failover (drivers that act on a stale
amphora). ``healthmgr serve`` wires them together under one trio nursery.
"""
