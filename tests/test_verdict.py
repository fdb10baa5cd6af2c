"""The verdict report.md and the console open with (bench.report.verdict): per corpus (by sample
size and codec) and regime, the layouts within noise of the best, loose files' ratio and what
bounded the best run; sentences generated from those figures; the runs not ok left out and named;
the heatmap embedded; a console without the project's `goal:` lines, which `python -m bench.goals`
prints. From fixture results (no measuring), except one tiny `bench suite` with its runs replaced."""

from __future__ import annotations

import dataclasses

import pytest

from bench.cli import suite
from bench.cli.commands import main as bench_main
from bench.goals import main as goals_main
from bench.report import plots
from bench.report.markdown import HEATMAP, write_report
from bench.report.verdict import AVOID, cell_text, ecosystem_text, verdict, verdict_console, verdict_markdown
from bench.results.outputs import REPORT_MARK
from bench.results.result import EpochRecord, Floors, Results, Run, RunConfig, Split, StreamFloor
from generator.errors import UsageError

N = 64  # samples per epoch
META = {"command": ["python", "-m", "bench", "run"], "host": {"name": "box", "cores": 2, "ram_bytes": 8 * 2**30},
        "filesystem": {"fstype": "ext4", "source": "/dev/vda1"}}


def epoch(e, mb, sample, timing=False, read_ms=None, decode_ms=None, residency=None, cache_ok=True):
    wall = N * sample / (mb * 1e6)
    split = {"sample_ns": ()}
    if timing and read_ms is not None:
        r, d = round(read_ms * 1e6), round(decode_ms * 1e6)
        split = {"sample_ns": (r + d,) * N, "split": Split(read_ns=(r,) * N, decode_ns=(d,) * N,
                                                           read_cpu_s=read_ms / 1e3 * N, decode_cpu_s=decode_ms / 1e3 * N)}
    return EpochRecord(repeat=0, epoch=e, first=e == 0, timing=timing, samples=N, payload_bytes=N * sample,
                       wall_s=wall, ttfb_s=wall / 4, batch_ns=(round(wall / 4 * 1e9),) * 4, cpu_s=0.1,
                       rchar=0, read_bytes=0, syscr=0, device_sectors_read=None,
                       residency_before=residency if residency is not None else 1.0, residency_after=None,
                       cache_ok=cache_ok, indices_ok=True, **split)


def run(layout, cache, mb, sample=1000, spread=0.02, split=None, kind="loader", reads=None, workers=2, ok=True):
    """A first epoch, two steady epochs at mb x (1 -/+ spread) MB/s, and with `split` (read ms,
    decode ms) a timing epoch; `ok` False: the cache state did not hold in the last epoch."""
    res = 0.0 if cache == "cold" else 1.0
    epochs = [epoch(0, mb / 2, sample, residency=res), epoch(1, mb * (1 - spread), sample, residency=res),
              epoch(2, mb * (1 + spread), sample, residency=res if ok else 0.5, cache_ok=ok)]
    if split:
        epochs.append(epoch(3, mb / 3, sample, True, *split, residency=res))
    cfg = RunConfig(batch_size=16, workers=workers, worker_kind="process" if kind == "torch" else "thread")
    return Run(layout, kind, reads or layout, cache, None, cfg, tuple(epochs))


def results(runs, preset="mnist", sample=784, payload="tiff", quality=None, floors=Floors()):
    spec = {"preset": preset, "count": N, "payload": payload, "compression": "none"}
    if quality is not None:
        spec["quality"] = quality
    corpus = {"path": "/nowhere", "spec": spec, "payload_bytes": N * sample, "layouts": {}}
    return Results("2026-01-01T00:00:00Z", META, corpus, floors, tuple(runs))


def mnist(runs):
    return results(runs)


def jpeg(runs):
    return results(runs, preset="imagenet", sample=80_000, payload="jpeg", quality=90)


DECODE = (0.05, 2.0)  # read, decode ms a sample: decode-bound
READ = (2.0, 0.1)  # I/O-bound


@pytest.fixture
def packed_wins():
    """hdf5 and lmdb ahead of loose files at MNIST size (tied cold), a decode-bound JPEG corpus."""
    return [mnist([run("hdf5", "cold", 100, 784), run("lmdb", "cold", 98, 784), run("files", "cold", 12, 784),
                   run("lmdb", "warm", 900, 784), run("hdf5", "warm", 850, 784), run("files", "warm", 300, 784)]),
            jpeg([run(l, c, mb, 80_000, split=DECODE) for c in ("cold", "warm")
                  for l, mb in (("files", 10.0), ("hdf5", 10.1), ("lmdb", 9.9))])]


@pytest.fixture
def files_win():
    """The opposite: loose files ahead everywhere, the JPEG corpus I/O-bound."""
    return [mnist([run("files", "cold", 100, 784), run("hdf5", "cold", 30, 784), run("lmdb", "cold", 20, 784),
                   run("files", "warm", 900, 784), run("hdf5", "warm", 400, 784), run("lmdb", "warm", 300, 784)]),
            jpeg([run(l, c, mb, 80_000, split=READ) for c in ("cold", "warm")
                  for l, mb in (("files", 50.0), ("hdf5", 10.0), ("lmdb", 12.0))])]


def test_ties_within_noise_are_all_recommended(packed_wins):
    v = verdict(packed_wins)
    assert v.regimes == ("cold", "warm")  # no capped run: no larger-than-memory column
    assert [row.corpus for row in v.rows] == ["mnist-64", "imagenet-64-jpeg-q90"]  # by sample size
    assert v.rows[0].label == "mnist-64 (784 B tiff)" and v.rows[1].label == "imagenet-64-jpeg-q90 (80 KB jpeg q90)"
    cold, warm = v.rows[0].cells["cold"], v.rows[0].cells["warm"]
    assert cold.recommended == ("hdf5", "lmdb")  # 98-102 and 96-100 MB/s overlap
    assert warm.recommended == ("lmdb",)  # 833-867 vs 882-918: apart
    assert cold.files_ratio == pytest.approx(0.12) and warm.files_ratio == pytest.approx(300 / 900)
    assert cell_text(cold) == "hdf5, lmdb; loose files: 0.12x"  # no split, no floor: no bound said


def test_a_decode_bound_corpus_is_said_to_make_the_layout_matter_little(packed_wins):
    v = verdict(packed_wins)
    cells = v.rows[1].cells
    assert {c.bound for c in cells.values()} == {"decode"}
    assert cell_text(cells["cold"]).endswith("; decode-bound")
    decode = [s for s in v.sentences if "decod" in s]
    assert decode == ["The layout does not matter where decoding bounds the run: imagenet-64-jpeg-q90 (jpeg q90) "
                      "cold, warm (decode 2 ms a sample, read 0.05 ms; every layout at or above 0.98x the best)."]
    # decode-bound by the split, yet the layouts far apart (a per-sample cost outside the split): said so
    steep = jpeg([run("files", "warm", 10.0, 80_000, split=DECODE), run("lmdb", "warm", 40.0, 80_000, split=(0.04, 1.9))])
    (sentence,) = [s for s in verdict([packed_wins[0], steep]).sentences if "decod" in s]
    assert sentence == ("Decoding bounds imagenet-64-jpeg-q90 (jpeg q90) warm (decode 1.9 ms a sample, read 0.04 ms; "
                        "layouts down to 0.25x the best), yet the layouts still differ there: the layout matters even "
                        "where decoding takes most of a sample's time.")


def test_opposite_outcomes_give_opposite_sentences(packed_wins, files_win):
    a, b = verdict(packed_wins).sentences, verdict(files_win).sentences
    assert 3 <= len(a) <= 6 and 3 <= len(b) <= 6
    assert a[0].startswith("Packed layouts beat loose files in 2 of 4 cells, most at mnist-64 cold (784 B samples), "
                           "where hdf5 reads 8.3x loose files' MB/s, least at mnist-64 warm (784 B, 3.00x)")
    assert b[0] == ("Loose files were the best or within noise of it in all 4 cells where they ran beside other "
                    "layouts: packing the images bought nothing measurable here.")
    assert a[2] == f"Avoid files (0.12x to 0.33x) at 784 B (mnist-64): under {AVOID:.1f}x the best in every regime measured."
    assert b[2] == ("Avoid lmdb (0.20x to 0.33x), hdf5 (0.30x to 0.44x) at 784 B (mnist-64); hdf5 (0.20x), lmdb "
                    "(0.24x) at 80 KB (imagenet-64-jpeg-q90): under 0.5x the best in every regime measured.")
    assert b[1].startswith("No cell was decode-bound")
    for sentences in (a, b):
        assert sentences[-1].startswith("These figures are this machine's (ext4 on /dev/vda1, 8.0 GiB of memory, "
                                        "2 cores)")
        assert "Only this project's loader was measured" in sentences[-2]


def test_a_run_not_ok_is_left_out_and_named(packed_wins, tmp_path, capsys):
    lost = mnist([*packed_wins[0].runs, run("npy", "warm", 5000, 784, ok=False)])  # fastest, but not held
    v = verdict([lost, packed_wins[1]])
    warm = v.rows[0].cells["warm"]
    assert "npy" not in warm.ratios and warm.recommended == ("lmdb",) and warm.excluded == ("npy",)
    assert cell_text(warm).endswith("; not ok: npy")
    assert v.not_ok == ("not ok: mnist-64 npy warm w2: cache not held (down to 50% resident; warm needs 99%); "
                        "left out of the verdict",)
    assert v.not_ok[0] in verdict_console(v)
    paths = []
    for i, res in enumerate((lost, packed_wins[1])):
        res.save(tmp_path / f"{i}.json")
        paths.append(str(tmp_path / f"{i}.json"))
    assert bench_main(["report", *paths, "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert [l for l in out.splitlines() if l.startswith("not ok:")] == list(v.not_ok)
    assert f"- {v.not_ok[0]}" in (tmp_path / "rep" / "report.md").read_text()


def test_a_single_layout_and_missing_regimes():
    only = mnist([run("files", "cold", 50, 784), run("files", "capped", 20, 784)])
    v = verdict([only, jpeg([run("hdf5", "warm", 10, 80_000)])])
    assert v.regimes == ("cold", "capped", "warm")  # one corpus capped: the column for all
    cells = v.rows[0].cells
    assert cell_text(cells["cold"]) == "files (the only layout measured)"
    assert cell_text(cells["warm"]) == "not measured"
    assert [cell_text(c) for c in v.rows[1].cells.values()] == ["not measured", "not measured",
                                                                 "hdf5 (the only layout measured)"]
    assert v.sentences[0].startswith("Loose files were not measured beside another layout")
    console = verdict_console(v)
    assert "    larger than memory: files (the only layout measured)" in console
    assert "    cold:               not measured" in console


def test_what_bounds_the_best_run_comes_from_its_floor():
    def floors(mb):  # a 2-stream random-read floor of the files layout, cold: mb MB/s
        return Floors(at=(StreamFloor("files", "cold", "rand", 2, 32, int(mb * 1e6), 1000, 1.0, 0.0, 784),))

    near = verdict([results([run("files", "cold", 80, 784), run("hdf5", "cold", 10, 784)], floors=floors(100))])
    far = verdict([results([run("files", "cold", 20, 784), run("hdf5", "cold", 10, 784)], floors=floors(100))])
    assert near.rows[0].cells["cold"].bound == "io" and cell_text(near.rows[0].cells["cold"]).endswith("I/O-bound")
    assert far.rows[0].cells["cold"].bound == "loader"


def test_the_loader_sentence_compares_torch_and_naive_runs_with_ours(packed_wins):
    torch = mnist([*packed_wins[0].runs, run("torch-batch-hdf5", "cold", 25, 784, kind="torch", reads="hdf5"),
                   run("naive-files", "cold", 6, 784, kind="naive", reads="files")])
    sentences = verdict([torch, packed_wins[1]]).sentences
    assert len(sentences) == 6
    assert ("PyTorch's DataLoader reached 0.25x our loader's MB/s on the same files (1 layout and regime pair): the "
            "loader moved throughput by up to 4.0x, the layout by up to 8.3x.") in sentences
    assert any(s.startswith("The plain library call per sample (naive-*) reached 0.50x our loader's MB/s") for s in sentences)
    assert not any("Only this project's loader" in s for s in sentences)


def test_report_opens_with_the_verdict_and_embeds_the_heatmap(packed_wins, tmp_path):
    paths = []
    for i, res in enumerate(packed_wins):
        res.save(tmp_path / f"{i}.json")
        paths.append(tmp_path / f"{i}.json")
    md = write_report(paths, tmp_path / "rep").read_text()
    first = md.splitlines()[:40]
    assert first[0] == REPORT_MARK and first[1] == "# layoutbench report" and first[3] == "## Verdict"
    assert "| corpus (sample size, codec) | cold | warm |" in first
    assert "| mnist-64 (784 B tiff) | hdf5, lmdb; loose files: 0.12x | lmdb; loose files: 0.33x |" in first
    for s in verdict(packed_wins).sentences:
        assert s in first
    embed = f"![each layout's MB/s over the best, per corpus and regime]({HEATMAP})"
    assert embed in md and md.index(embed) < md.index("## Answer")
    png = tmp_path / "rep" / HEATMAP
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_every_figure_goes_through_save_figure(packed_wins, tmp_path, monkeypatch):
    """Only save_figure writes a PNG: with it writing nothing, the report leaves no PNG behind."""
    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: (saved.append(path.name), plots._plt().close(fig),
                                                                  path)[-1])
    paths = []
    for i, res in enumerate(packed_wins):
        res.save(tmp_path / f"{i}.json")
        paths.append(tmp_path / f"{i}.json")
    md = write_report(paths, tmp_path / "rep").read_text()
    assert HEATMAP in saved and "throughput.png" in saved
    assert not list((tmp_path / "rep").glob("*.png"))
    assert all(f"({name})" in md for name in saved)


def test_the_console_has_no_goal_lines_the_developer_command_has(packed_wins, tmp_path, capsys):
    paths = []
    for i, res in enumerate(packed_wins):
        res.save(tmp_path / f"{i}.json")
        paths.append(str(tmp_path / f"{i}.json"))
    assert bench_main(["report", *paths, "--out", str(tmp_path / "rep")]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert not [l for l in quiet if l.startswith("goal:")]
    assert quiet[0].startswith("Verdict") and quiet[-1].startswith(f"report: {tmp_path / 'rep' / 'report.md'}")
    assert not any(l.startswith("floors ") for l in quiet) and len(quiet) <= 60
    assert bench_main(["report", *paths, "--out", str(tmp_path / "rep"), "--verbose"]) == 0
    verbose = capsys.readouterr().out.splitlines()
    assert any(l.startswith("floors mnist-64") for l in verbose) and len(verbose) > len(quiet)
    assert not [l for l in verbose if l.startswith("goal:")]
    assert goals_main([str(tmp_path)]) == 0  # a directory: its *.json
    goals = capsys.readouterr().out.splitlines()
    assert goals == ["goal: mnist-64 cold: lmdb 98.0 MB/s = 0.98x hdf5 100.0 MB/s, same run (goal >= 0.8): met",
                     "goal: imagenet-64-jpeg-q90 cold: lmdb 9.9 MB/s = 0.99x files 10.0 MB/s, same run (goal >= 0.8): met"]
    with pytest.raises(UsageError, match="holds no \\*.json results files"):
        goals_main([str(tmp_path / "rep")])


def test_the_suite_ends_with_the_verdict_and_no_goal_lines(packed_wins, tmp_path, monkeypatch, capsys):
    """`bench suite` with its measuring replaced by fixture results: progress, then the verdict,
    the report's place, in few lines; no `goal:` line, no summary table."""
    tiny = suite.SuitePlan((suite.preset("mnist", 20),), "mnist-20")
    monkeypatch.setattr(suite, "QUICK", tiny)
    monkeypatch.setattr(suite, "run_bench", lambda cfg: packed_wins[0])
    assert suite.run_suite(tmp_path / "data", tmp_path / "results", quick=True) == 0
    out = capsys.readouterr().out.splitlines()
    jobs = [l for l in out if l.startswith("bench: [")]
    assert jobs and jobs[0].startswith(f"bench: [1/{len(jobs)}] ")
    assert [l for l in out if l.strip().endswith("s left") or l.strip().endswith("the report next")]
    after = out[out.index(next(l for l in out if l.startswith("Verdict"))):]
    assert len(after) <= 60 and after[-1].startswith(f"report: {tmp_path / 'results' / 'report.md'}")
    assert not [l for l in out if l.startswith("goal:")] and not any(l.startswith("floors ") for l in out)
    assert (tmp_path / "results" / HEATMAP).exists()
    assert "Speed goals" not in (tmp_path / "results" / "report.md").read_text()


def test_the_verdict_ranks_payload_bytes_runs_only_where_nothing_was_decoded():
    raw = dataclasses.replace(run("files", "capped", 40, 80_000), config=RunConfig(batch_size=16, workers=2, decode=False))
    v = verdict([jpeg([run("files", "cold", 10, 80_000), run("hdf5", "cold", 12, 80_000), raw])])
    capped = v.rows[0].cells["capped"]
    assert capped.bytes_only and cell_text(capped) == "files (the only layout measured) (payload bytes only)"
    assert not v.rows[0].cells["cold"].bytes_only


def test_a_layout_best_in_its_own_shard_order_is_named_with_it():
    shards = dataclasses.replace(run("tar", "cold", 120, 784), config=RunConfig(batch_size=16, workers=2, shuffle="shards"))
    v = verdict([mnist([run("hdf5", "cold", 100, 784), run("tar", "cold", 40, 784), shards])])
    cold = v.rows[0].cells["cold"]
    assert cold.recommended == ("tar",) and cell_text(cold) == "tar (shards order)"


def eco(layout, cache, mb, sample=784, ok=True, library=None):
    """An ecosystem run: `layout` read by its own library (kind and loader "ecosystem")."""
    r = run(f"ecosystem-{layout}", cache, mb, sample, kind="ecosystem", reads=layout, ok=ok)
    return dataclasses.replace(r, loader="ecosystem", dataloader={"library": library or f"{layout}-lib"})


def loader_dominates():
    """MNIST warm: ours 300-900 MB/s, each layout's own library 30-50 (10-22x slower), layouts 3x and 1.7x apart."""
    return [mnist([run("hdf5", "warm", 900, 784), run("lmdb", "warm", 850, 784), run("files", "warm", 300, 784),
                   eco("hdf5", "warm", 40), eco("lmdb", "warm", 50), eco("files", "warm", 30)])]


def layout_dominates():
    """MNIST warm: hdf5 9x loose files with ours and 12x with their libraries; ours 1.5x and 2x theirs."""
    return [mnist([run("hdf5", "warm", 900, 784), run("files", "warm", 100, 784),
                   eco("hdf5", "warm", 600), eco("files", "warm", 50)])]


def test_the_two_effects_where_the_loader_sets_the_number():
    v = verdict(loader_dominates())
    e = v.rows[0].cells["warm"].ecosystem
    assert list(e.ratios) == ["lmdb", "hdf5", "files"] and e.ratios["files"] == pytest.approx(0.6)  # (a)
    assert list(v.rows[0].cells["warm"].ratios) == ["hdf5", "lmdb", "files"]  # (b): ours, unchanged
    assert e.loader_gain == pytest.approx({"hdf5": 22.5, "lmdb": 17.0, "files": 10.0})  # (c)
    assert e.layout_gain_ours == pytest.approx(3.0) and e.layout_gain_theirs == pytest.approx(50 / 30)
    assert e.effect == "loader"
    sentence = ("On mnist-64 warm, the loader, not the layout, sets most of the number: changing the loader gives 10x "
                "to 22x (ours over each layout's own library), changing the layout 3.0x with ours and 1.7x with the "
                "libraries users use (best layout over worst).")
    assert sentence in v.sentences
    assert not any("Only this project's loader" in s for s in v.sentences)  # ecosystem runs were measured
    console = verdict_console(v)
    assert console[3:5] == ["    warm:            hdf5; loose files: 0.33x",
                            "      own libraries: lmdb 1.00 > hdf5 0.80 > files 0.60"]  # (b), then (a)
    assert len(console) <= 60


def test_the_two_effects_where_the_layout_sets_the_number():
    v = verdict(layout_dominates())
    e = v.rows[0].cells["warm"].ecosystem
    assert e.effect == "layout" and e.layout_gain_ours == pytest.approx(9.0)
    assert e.layout_gain_theirs == pytest.approx(12.0)
    (sentence,) = [s for s in v.sentences if s.startswith("On mnist-64 warm")]
    assert sentence == ("On mnist-64 warm, the layout, not the loader, sets most of the number: changing the loader "
                        "gives 1.5x to 2.0x (ours over each layout's own library), changing the layout 9.0x with ours "
                        "and 12x with the libraries users use (best layout over worst).")
    # one layout read by both: the loader's gain alone, its library named, the layout's not compared
    one = verdict([mnist([run("hdf5", "warm", 900, 784), run("files", "warm", 100, 784),
                          eco("hdf5", "warm", 300, library="h5py")])])
    assert one.rows[0].cells["warm"].ecosystem.effect is None
    assert ("On mnist-64 warm, changing the loader gives 3.0x (ours over hdf5's own library, h5py); hdf5 is the "
            "one layout both read ok, so the layout's gain is not compared there.") in one.sentences


def test_without_ecosystem_runs_nothing_is_said_of_them(packed_wins):
    v = verdict(packed_wins)
    assert all(c.ecosystem is None for c in v.cells())
    assert not any("own librar" in s or "changing the" in s for s in v.sentences)
    assert not any("own libraries" in l for l in verdict_console(v))
    assert not any("ecosystem" in l for l in verdict_markdown(v))


def test_an_ecosystem_run_not_ok_is_left_out_and_named(tmp_path, capsys):
    res = mnist([*loader_dominates()[0].runs, eco("npy", "warm", 5000, ok=False)])  # fastest, but not held
    v = verdict([res])
    e = v.rows[0].cells["warm"].ecosystem
    assert "npy" not in e.ratios and "npy" not in e.loader_gain and e.excluded == ("npy",)
    assert e.loader_gain == pytest.approx({"hdf5": 22.5, "lmdb": 17.0, "files": 10.0})  # as without it
    assert v.not_ok == ("not ok: mnist-64 ecosystem-npy warm w2: cache not held (down to 50% resident; warm needs "
                        "99%); left out of the verdict",)
    assert ecosystem_text(e) == "lmdb 1.00 > hdf5 0.80 > files 0.60; not ok: npy"
    res.save(tmp_path / "0.json")
    assert bench_main(["report", str(tmp_path / "0.json"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert v.not_ok[0] in out and len(out) <= 60
    assert [l for l in out if "changing the loader" in l]
    first = (tmp_path / "rep" / "report.md").read_text().splitlines()[:40]
    assert "| mnist-64 (784 B tiff) | not measured | lmdb 1.00 > hdf5 0.80 > files 0.60; not ok: npy |" in first
    assert "| mnist-64 (784 B tiff) | not measured | hdf5; loose files: 0.33x |" in first
    for s in v.sentences:
        assert s in first
    assert f"- {v.not_ok[0]}" in (tmp_path / "rep" / "report.md").read_text()


def test_regimes_that_agree_share_a_sentence_with_their_range():
    """Cold and warm both loader-bound by the same measure: one sentence over both, the figures' ranges;
    a regime where the layout sets the number: its own sentence."""
    warm = loader_dominates()[0].runs
    cold = [dataclasses.replace(r, cache="cold") for r in (run("hdf5", "cold", 90, 784), run("lmdb", "cold", 80, 784),
                                                          run("files", "cold", 40, 784), eco("hdf5", "cold", 4),
                                                          eco("lmdb", "cold", 4), eco("files", "cold", 2))]
    v = verdict([mnist([*cold, *warm])])
    assert [c.ecosystem.effect for c in v.rows[0].cells.values()] == ["loader", "loader"]
    (sentence,) = [s for s in v.sentences if s.startswith("On mnist-64")]
    assert sentence == ("On mnist-64 cold and warm, the loader, not the layout, sets most of the number: changing the "
                        "loader gives 10x to 22x (ours over each layout's own library), changing the layout 2.2x to "
                        "3.0x with ours and 1.7x to 2.0x with the libraries users use (best layout over worst).")
    capped = [run("hdf5", "capped", 90, 784), run("files", "capped", 10, 784), eco("hdf5", "capped", 45),
              eco("files", "capped", 5)]
    v = verdict([mnist([*cold, *capped, *warm])])
    assert [s.split(",")[0] for s in v.sentences if s.startswith("On mnist-64")] == ["On mnist-64 cold and warm",
                                                                                    "On mnist-64 larger than memory"]
    assert "the layout, not the loader, sets most of the number: changing the loader gives 2.0x" in v.sentences[4]
