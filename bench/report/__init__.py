"""What results say: one row per run (analysis), the Answer and the verdicts on floors and bounds
(verdict), report.md, the summary table and the CSV (markdown), the PNG plots (plots), and two
results files side by side (compare)."""
