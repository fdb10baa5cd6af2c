"""The commands: `python -m bench` (commands), the default suite (suite), `bench plan` (plan) and
generation under MPI (`mpirun -n R python -m bench.cli.mpi generate`)."""
