"""The rules: the manager's decisions as pure functions of plain values, no I/O.

- :mod:`.status`: Octavia's status rules, heartbeat + topology -> statuses;
- :mod:`.stats`: listener statistics coalesced between two flushes;
- :mod:`.detector`: which silent amphorae may be failed over now, and why not;
- :mod:`.impairment`: whether this manager can see (its local health);
- :mod:`.topology`, :mod:`.batch`: the values they read (the database's
  topology) and write (what one flush writes);
- :mod:`.constants`: Octavia's status vocabularies.
"""
