"""The results file: typed records, their checks and summaries (result), the statistics they use
(stats) and accelerator utilization, measured and modelled (au)."""
