"""The driver of `bench run`: what one command measures (config), every run of it (runner), a run
under a memory cap (capped), how a run opens and warms its loader (reading), the DataLoader's
runs (torchrun), naive baselines (naive), and the ranks (comm; mpi with mpi4py)."""
