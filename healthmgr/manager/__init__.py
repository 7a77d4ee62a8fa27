"""The control-plane daemon's moving parts (the loops; the rules they apply
are in :mod:`healthmgr.rules`, the database in :mod:`healthmgr.db`).

A heartbeat: receiver (UDP) -> ingest and decoder (keys, signature, replay)
-> view (topology cache + status rules, in memory) -> pending -> writer (one
batched transaction per flush). Failover: checker (one read per health check,
the detector's verdicts) -> runner (claimed failovers, bounded) -> failover
(the drivers). monitor: this manager's own health and liveness row;
refresher: topology loads for the view; metrics: the Prometheus series and
endpoint. ``healthmgr serve`` (service.py) wires them together under one
trio nursery. docs/architecture.md draws the whole path.
"""
