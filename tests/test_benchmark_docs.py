"""The benchmark figures of benchmarks/README.md and README.md are those of the published run's JSON lines."""

import json
import os
import re

import pytest

from benchmarks import onednn, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The Intel Xeon (AVX-512) kind's earlier run, recorded before the per-line CPU fields existed.
PUBLISHED = os.path.join(ROOT, "benchmarks", "published", "latest.jsonl")
#: The Intel kind again (AVX-512 and AMX), with the trainer's thread count against TensorFlow's (``--threads-ab``).
PUBLISHED_INTEL = os.path.join(ROOT, "benchmarks", "published", "intel-xeon-ml1m.jsonl")
PUBLISHED_INTEL_20M = os.path.join(ROOT, "benchmarks", "published", "intel-xeon-ml20m.jsonl")
#: The AMD EPYC Zen 3 (AVX2 only) kind: sweeps with oneDNN on and off, and the kernels.
PUBLISHED_AMD = os.path.join(ROOT, "benchmarks", "published", "amd-epyc-zen3.jsonl")
#: The AMD kind's ML-20M run (oneDNN on, the default), two rounds.
PUBLISHED_AMD_20M = os.path.join(ROOT, "benchmarks", "published", "amd-epyc-zen3-ml20m.jsonl")
PUBLISHED_AMD_KERNELS = os.path.join(ROOT, "benchmarks", "published", "onednn-kernels-amd.jsonl")
#: The AMD EPYC Zen 4 (AVX-512) kind: ML-1M and ML-20M, two rounds each.
PUBLISHED_ZEN4 = os.path.join(ROOT, "benchmarks", "published", "amd-epyc-zen4.jsonl")
PUBLISHED_ZEN4_20M = os.path.join(ROOT, "benchmarks", "published", "amd-epyc-zen4-ml20m.jsonl")
NAMES = {"ml-1m": "ML-1M", "ml-20m": "ML-20M"}
COLUMNS = ("wals2-cholesky", "wals2-cg", "implicit-cholesky", "implicit-cg")


def lines_of(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def published(path=PUBLISHED):
    return [line for line in lines_of(path) if "system" in line]


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def seconds(value: float) -> str:
    """The README's format of a median: three decimals under 1 s, two above."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def test_benchmark_readme_holds_the_published_table():
    results = published()
    assert {r["system"] for r in results} >= set(COLUMNS) | {"numpy", "numpy-2threads"}
    text = read("benchmarks/README.md")
    for row in run.markdown_table(results).splitlines()[2:]:
        assert row in text.splitlines(), row  # whole lines: no cell more or less


def test_readme_performance_table_is_the_published_medians():
    """One table per CPU kind: the Intel kind's latest rows (the trainer's thread count), the AMD Zen 3 kind's
    (oneDNN on, the trainer's default), then the AMD Zen 4 kind's."""
    section = read("README.md").split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| ML-", line)]
    expected = []
    kinds = (
        (PUBLISHED_INTEL, PUBLISHED_INTEL_20M),
        (PUBLISHED_AMD, PUBLISHED_AMD_20M),
        (PUBLISHED_ZEN4, PUBLISHED_ZEN4_20M),
    )
    for paths in kinds:
        by_key = {(r["data"], r["k"], r["system"]): r["median_s"] for path in paths for r in published(path)}
        keys = sorted({(d, k) for d, k, s in by_key if s == "implicit-cg"}, key=lambda x: (x[0] != "ml-1m", x[1]))
        for data, k in keys:
            cells = [NAMES[data], str(k)] + [seconds(by_key[data, k, s]) for s in COLUMNS]
            expected.append("| " + " | ".join(cells) + " |")
    assert rows == expected


def test_published_lines_name_their_cpu_kind():
    intel = lines_of(PUBLISHED)[0]["machine"]
    assert intel["cpu"].startswith("Intel(R) Xeon(R)") and intel["avx512f"]
    assert "cpu_flags" not in intel  # recorded before the field existed; the README says so
    for path in (PUBLISHED_AMD, PUBLISHED_AMD_20M):
        amd = lines_of(path)
        assert amd[0]["machine"]["cpu"].startswith("AMD EPYC") and amd[0]["machine"]["TF_ENABLE_ONEDNN_OPTS"] is None
    for line in published(PUBLISHED_AMD) + published(PUBLISHED_AMD_20M):
        assert line["cpu"].startswith("AMD EPYC") and line["cpu_flags"]["avx2"] and not line["cpu_flags"]["avx512f"]
        off = line["system"].endswith(run.ONEDNN_OFF)
        assert line["TF_ENABLE_ONEDNN_OPTS"] == ("0" if off else "1"), line["system"]
    for path in (PUBLISHED_ZEN4, PUBLISHED_ZEN4_20M):
        machine = lines_of(path)[0]["machine"]
        assert machine["cpu"].startswith("AMD EPYC") and machine["cpu_flags"]["avx512_vnni"]
    for line in published(PUBLISHED_ZEN4) + published(PUBLISHED_ZEN4_20M):
        assert line["cpu"].startswith("AMD EPYC") and line["cpu_flags"]["avx512f"]
        assert line["TF_ENABLE_ONEDNN_OPTS"] == "1", line["system"]
    for path in (PUBLISHED_INTEL, PUBLISHED_INTEL_20M):
        machine = lines_of(path)[0]["machine"]
        assert machine["cpu"].startswith("Intel(R) Xeon(R)") and machine["cpu_flags"]["amx_tile"]
        assert machine["cores"] == 2 and machine["TF_NUM_INTRAOP_THREADS"] is None  # the worker's default applies
    for line in published(PUBLISHED_INTEL) + published(PUBLISHED_INTEL_20M):
        assert line["cpu"].startswith("Intel(R) Xeon(R)") and line["TF_ENABLE_ONEDNN_OPTS"] == "1"
        tf_threads = line["system"].endswith(run.TF_THREADS)
        assert line["TF_NUM_INTRAOP_THREADS"] == ("0" if tf_threads else "1"), line["system"]  # 1: 2 cores // 2
    text = " ".join(read("benchmarks/README.md").split())
    assert "recorded before the CPU field existed; measured on the Intel kind" in text


def test_benchmark_readme_holds_the_intel_tables():
    section = read("benchmarks/README.md").split("## Intel Xeon (AVX-512) kind", 1)[1].split("\n## ", 1)[0]
    rows = []
    for path in (PUBLISHED_INTEL, PUBLISHED_INTEL_20M):
        results = published(path)
        assert {r["system"] for r in results} >= set(COLUMNS) | {s + run.TF_THREADS for s in COLUMNS[:2]}
        rows += run.markdown_table(results).splitlines()[2:] + run.ab_table(results, run.TF_THREADS).splitlines()[2:]
    assert len(rows) == 2 * (16 + 4)
    for row in rows:
        assert row in section.splitlines(), row


def test_the_intel_goals_table_is_the_published_ratios():
    """ "Against the goals on the Intel kind": the ratios and peak RSS of its rows, from the published lines."""
    medians, rss = {}, {}
    for path in (PUBLISHED_INTEL, PUBLISHED_INTEL_20M):
        for r in published(path):
            medians[r["data"], r["k"], r["system"]] = r["median_s"]
            rss[r["data"], r["k"], r["system"]] = r["peak_rss_gb"]

    def ratio(data, k, peer, system="wals2-cholesky"):
        return f"{medians[data, k, peer] / medians[data, k, system]:.2f}x"

    section = read("benchmarks/README.md").split("### Against the goals on the Intel kind", 1)[1].split("\n#", 1)[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    chol = [ratio(d, k, "implicit-cholesky") for d in ("ml-1m", "ml-20m") for k in (32, 64)]
    twin = [ratio(d, k, "numpy-2threads") for d in ("ml-1m", "ml-20m") for k in (32, 64)]
    assert (
        f"met: {chol[0]} / {chol[1]} (ML-1M k = 32 / 64), {chol[2]} / {chol[3]} (ML-20M) |"
        in rows["exact (`wals2-cholesky`) >= 3x `implicit`'s Cholesky"]
    )
    assert (
        f"met: {twin[0]} / {twin[1]} (ML-1M), {twin[2]} / {twin[3]} (ML-20M);"
        in rows["exact >= 1.2x the numpy twin (`numpy-2threads`)"]
    )
    peak = [f"{rss['ml-20m', 64, system]:.2f} GB" for system in ("wals2-cholesky", "wals2-cg")]
    assert f"met: {peak[0]} (exact), {peak[1]} (cg);" in rows["ML-20M k = 64 peak RSS <= 1.5 GB"]
    cg = [ratio(d, k, "implicit-cg", "wals2-cg") for d, k in (("ml-20m", 32), ("ml-1m", 32), ("ml-1m", 64))]
    cg.append(ratio("ml-20m", 64, "implicit-cg", "wals2-cg"))
    want = f"met at ML-20M k = 32 only: `cg` {cg[0]}; **missed** at ML-1M ({cg[1]} at k = 32, {cg[2]} at k = 64)"
    assert want in rows["fastest wals2 solver >= 1.5x `implicit`'s CG"]
    assert f"and at ML-20M k = 64 ({cg[3]})" in rows["fastest wals2 solver >= 1.5x `implicit`'s CG"]


def test_benchmark_readme_holds_the_amd_tables():
    results = published(PUBLISHED_AMD)
    assert {r["system"] for r in results} >= set(COLUMNS) | {s + run.ONEDNN_OFF for s in COLUMNS[:2]}
    text = read("benchmarks/README.md")
    rows = run.markdown_table(results).splitlines()[2:] + run.onednn_table(results).splitlines()[2:]
    rows += onednn.kernel_table(lines_of(PUBLISHED_AMD_KERNELS)).splitlines()[2:]
    rows += run.markdown_table(published(PUBLISHED_AMD_20M)).splitlines()[2:]
    assert len(rows) > 30
    for row in rows:
        assert row in text.splitlines(), row  # whole lines: no cell more or less


def test_benchmark_readme_holds_the_zen4_tables():
    results = published(PUBLISHED_ZEN4)
    assert {r["system"] for r in results} >= set(COLUMNS) | {"numpy", "numpy-2threads"}
    section = read("benchmarks/README.md").split("## AMD EPYC Zen 4 (AVX-512) kind", 1)[1].split("\n## ", 1)[0]
    rows = (
        run.markdown_table(results).splitlines()[2:]
        + run.markdown_table(published(PUBLISHED_ZEN4_20M)).splitlines()[2:]
    )
    assert len(rows) == 28
    for name in ("ml1m-run2", "ml1m-run3", "ml20m-run2"):  # the repeats of the same day
        rows += run.markdown_table(published(PUBLISHED_ZEN4.replace(".jsonl", f"-{name}.jsonl"))).splitlines()[2:]
    assert len(rows) == 70
    for row in rows:
        assert row in section.splitlines(), row


def test_cpu_info_and_the_variants(monkeypatch):
    info = run.cpu_info()
    assert set(info) == {"cpu", "avx512f", "cpu_flags", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS"}
    assert set(info["cpu_flags"]) == set(run.CPU_FLAGS)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert run.child_env("wals2-cholesky" + run.ONEDNN_OFF)["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert run.child_env("wals2-cg" + run.TF_THREADS)["TF_NUM_INTRAOP_THREADS"] == "0"  # TensorFlow's own count
    plain = run.child_env("wals2-cholesky")
    assert "TF_ENABLE_ONEDNN_OPTS" not in plain and "TF_NUM_INTRAOP_THREADS" not in plain  # the worker sets them
    assert run.variant_of("wals2-cg" + run.TF_THREADS) == ("wals2-cg", run.TF_THREADS)
    assert run.variant_of("implicit-cg") == ("implicit-cg", None)
    results = [
        {"data": "d", "k": 8, "system": "wals2-cg", "median_s": 0.10},
        {"data": "d", "k": 8, "system": "wals2-cg" + run.TF_THREADS, "median_s": 0.12},
    ]
    assert run.ab_table(results, run.TF_THREADS).splitlines()[2] == "| d | 8 | wals2-cg | 0.120 | 0.100 | 1.20 |"


def test_rounds_merge_into_one_line_per_configuration():
    def line(sweeps, rss, layout):
        return {
            "data": "d",
            "k": 8,
            "system": "s",
            "loadavg_1m_at_start": layout / 10,
            "layout_s": layout,
            "warmup_s": 2 * layout,
            "sweep_s": sweeps,
            "cpu_util": 1.5 + layout / 10,
            "median_s": sorted(sweeps)[1],
            "min_s": min(sweeps),
            "max_s": max(sweeps),
            "peak_rss_gb": rss,
        }

    merged = run.merge_rounds([line([3.0, 1.0, 2.0], 0.5, 1.0), line([6.0, 4.0, 5.0], 0.7, 3.0)])
    assert merged["sweep_s"] == [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]
    assert merged["median_s"] == 3.5 and (merged["min_s"], merged["max_s"]) == (1.0, 6.0)
    assert merged["round_medians_s"] == [2.0, 5.0] and merged["rounds"] == 2
    assert merged["peak_rss_gb"] == 0.7 and merged["layout_s"] == 2.0 and merged["warmup_s"] == 4.0
    assert merged["cpu_util"] == pytest.approx(1.7) and merged["loadavg_1m_at_start"] == 0.3
    assert run.merge_rounds([line([1.0, 2.0, 3.0], 0.5, 1.0)]) == line([1.0, 2.0, 3.0], 0.5, 1.0)
    failed = {"data": "d", "k": 8, "system": "s", "error": "exit 1: boom"}
    assert run.merge_rounds([line([1.0, 2.0, 3.0], 0.5, 1.0), failed]) == failed


#: The subspace solver's objective-vs-time curves against the exact and CG solvers (``benchmarks.objective``).
PUBLISHED_SUBSPACE = os.path.join(ROOT, "benchmarks", "published", "subspace-amd-epyc.jsonl")


def test_subspace_section_holds_the_published_curves():
    from benchmarks import objective

    section = read("benchmarks/README.md").split("## Subspace solver", 1)[1].split("\n## ", 1)[0]
    names = ("subspace-ml1m-k512-zen4.jsonl", "subspace-ml1m-k512-intel.jsonl")
    for path in (PUBLISHED_SUBSPACE, *[os.path.join(ROOT, "benchmarks", "published", name) for name in names]):
        lines = lines_of(path)
        assert {line["solver"] for line in lines} == {"cholesky", "cg", "subspace"}
        assert all(line["cpu"] for line in lines)
        for row in objective.time_table(lines).splitlines()[2:]:
            assert row in section.splitlines(), row


@pytest.mark.parametrize("name, title", [("amd", "AMD kind"), ("zen4", "Zen 4 kind"), ("intel", "Intel kind")])
def test_benchmark_readme_holds_the_stage_profiles(name, title):
    (line,) = lines_of(os.path.join(ROOT, "benchmarks", "published", f"stages-{name}-ml20m.jsonl"))
    section = read("benchmarks/README.md").split(f"### Where the seconds go on the {title}", 1)[1]
    section = section.split("\n## ")[0].split("\n### ")[0]
    assert f"numpy SGEMM {line['numpy_sgemm_gflops']:.0f} GFLOP/s" in section
    for half in ("rows", "cols"):
        for stage in ("gather", "Gram", "factorisation", "solves"):
            assert f"| {half} | {stage} | {line[f'{half}_rows_direct']} | {line[f'{half}_{stage}_s']:.3f} |" in section
        assert f"| {line[f'{half}_woodbury_s']:.3f} |" in section
        assert f"| {line[f'{half}_half_sweep_s']:.3f} |" in section


def test_subspace_section_holds_the_ml20m_k512_sweeps():
    from benchmarks import objective

    section = read("benchmarks/README.md").split("## Subspace solver", 1)[1].split("\n## ", 1)[0]
    # Zen 3 with long rows solved exactly; Zen 4 with block passes over them, and the code before on that machine.
    for name in ("amd", "zen4", "zen4-exact-long-rows", "intel", "intel-rows-dot"):
        lines = lines_of(os.path.join(ROOT, "benchmarks", "published", f"subspace-ml20m-k512-{name}.jsonl"))
        assert {(line["data"], line["k"]) for line in lines} == {("ml-20m", 512)}
        for row in objective.sweep_table(lines).splitlines()[2:]:
            assert row in section.splitlines(), row
    curves = []
    for name in ("zen4", "intel"):
        lines = lines_of(os.path.join(ROOT, "benchmarks", "published", f"subspace-ml20m-k512-{name}-curve.jsonl"))
        assert {line["solver"] for line in lines} == {"subspace", "cholesky"}
        for row in objective.time_table(lines).splitlines()[2:]:
            assert row in section.splitlines(), row
        curves += lines
    by_name = {
        name: lines_of(os.path.join(ROOT, "benchmarks", "published", f"subspace-ml20m-k512-{name}.jsonl"))
        for name in ("zen4", "zen4-exact-long-rows")
    }
    after = {(r["solver"], r["subspace_block"]): r["median_s"] for r in by_name["zen4"]}
    (before,) = by_name["zen4-exact-long-rows"]
    readme = " ".join(read("README.md").split())
    sub, exact = after["subspace", 64], after["cholesky", None]
    assert f"{sub:.1f} s against {exact:.1f} s; {before['median_s']:.1f} s before" in readme
    assert f"is {exact / sub:.1f}x faster than the exact one" in readme
    intel = {line["solver"]: line["median_s"] for line in curves if "Intel" in line["cpu"]}
    assert f"({intel['subspace']:.1f} s against {intel['cholesky']:.1f} s)" in readme
    assert f"is {intel['cholesky'] / intel['subspace']:.1f}x faster ({intel['subspace']:.1f} s" in readme
    text = " ".join(section.split())
    for line in curves:  # the curves as the prose gives them
        points = ", ".join(f"({t:.1f}, {loss:.4g})" if t else f"(0, {loss:.4g})" for t, loss in line["curve"])
        assert points in text, points


@pytest.mark.parametrize("name", ["amd", "zen4", "zen4-repeat", "intel", "intel-rows-dot"])
def test_equal_objective_section_holds_the_published_runs(name):
    from benchmarks import objective

    lines = lines_of(os.path.join(ROOT, "benchmarks", "published", f"equal-objective-{name}.jsonl"))
    assert {line["system"] for line in lines} >= {"implicit-cg", "wals2-cholesky", "wals2-cg", "wals2-subspace"}
    for line in lines:  # every system reached the common target, TOLERANCE above the worst system's lowest
        assert (
            line["lowest"]
            <= line["target"]
            == pytest.approx(
                (1 + objective.TOLERANCE)
                * max(other["lowest"] for other in lines if (other["data"], other["k"]) == (line["data"], line["k"]))
            )
        )
    section = read("benchmarks/README.md").split("## Equal objective against implicit's CG", 1)[1].split("\n## ")[0]
    for row in objective.equal_objective_table(lines).splitlines()[2:]:
        assert row in section.splitlines(), row


def test_zen4_memory_section_holds_the_published_phases():
    from benchmarks import memory

    lines = lines_of(os.path.join(ROOT, "benchmarks", "published", "memory-zen4-ml20m.jsonl"))
    assert {(line["data"], line["k"]) for line in lines} == {("ml-20m", 64)}
    assert {line["solver"] for line in lines} == {"cholesky", "cg"}
    section = read("benchmarks/README.md").split("### Memory on the Zen 4 kind", 1)[1].split("\n## ", 1)[0]
    for row in memory.markdown_table(lines).splitlines()[2:]:
        assert row in section.splitlines(), row
    peak = {line["solver"]: max(p["hwm_gb"] for p in line["phases"]) for line in lines}
    # The same probe on the code before the eigenbasis solves and the compact layouts, same machine.
    before, _ = lines_of(os.path.join(ROOT, "benchmarks", "published", "memory-zen4-ml20m-before.jsonl"))
    assert before["solver"] == "cholesky" and before["cpu"] == lines[0]["cpu"]
    text = " ".join(section.split())
    hwm_before = max(p["hwm_gb"] for p in before["phases"])
    assert f"levels off at {peak['cholesky']:.2f} GB (exact) and {peak['cg']:.2f} GB (`cg`)" in text
    assert f"against {hwm_before:.2f} GB for the exact sweep before" in text
