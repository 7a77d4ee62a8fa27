"""The store's half of the flush path: one batch written in one transaction.

The path, end to end: the status rules and the statistics accumulator produce
the values of :mod:`healthmgr.rules.batch`; the manager's view holds them in
:mod:`healthmgr.manager.pending` until :mod:`healthmgr.manager.writer` takes
them, at each flush interval, to :meth:`healthmgr.db.store.Store.flush` (the
transaction and its retries). Here:

- :mod:`.flusher`: the order of the writes in the transaction, and the
  isolation of rows the database refuses (bisecting the batch);
- :mod:`.statements`: the SQL per dialect, the parameters, the validation of
  values before they are written;
- :mod:`.octavia_stats`: listener statistics in Octavia's own table.
"""

from healthmgr.db.flush.flusher import Flusher, FlushStats

__all__ = ["FlushStats", "Flusher"]
