"""The benchmark: runs, probes (floors, cache, I/O counters), results, reports and plans."""
