"""The instruments: the page cache read and set (probes, regimes), process counters and the batch
clock (measure), memory cgroups (cgroups), page-cache hits (hits), the machine's floors (floors,
fio) and the facts of the machine (machine)."""
