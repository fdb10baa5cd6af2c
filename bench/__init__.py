"""The benchmark, in rooms, each importing only those below it:

    cli/      the commands: python -m bench (run, report, compare, suite, plan), MPI generation
    report/   what results say: the Answer and tables (verdict, markdown), plots, compare
    run/      the driver: one command's runs (config, runner, capped), DataLoader runs, MPI ranks
    probe/    the instruments: page cache (probes, regimes), counters and the batch clock
              (measure), cgroups, hits, the machine's floors (floors, fio) and facts (machine)
    results/  the results file (result), its statistics and the AU model
    speed/    the developers' speed scripts (python -m bench.speed.X), imported by nothing
"""
