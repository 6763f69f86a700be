"""What we show: a markdown table per workload, the JSON record, and the plot (matplotlib,
imported only when a plot is asked for)."""
from __future__ import annotations

import json
from pathlib import Path


def markdown(report: dict) -> str:
    """The machine, then one table per workload (rows: batch size × system)."""
    lines = _header(report["machine"], report["missing"], report["settings"].get("mode"))
    by_workload = {}
    for row in report["results"]:
        by_workload.setdefault(row["title"], []).append(row)
    for title, rows in by_workload.items():
        lines += ["", f"### {title} ({report['settings']['dtype']})", ""] + _table(rows)
    return "\n".join(lines) + "\n"


def _header(m, missing, mode=None):
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    blas = "; ".join(" ".join(filter(None, (b["internal_api"], b["version"], b.get("architecture"))))
                     + f" ({b['num_threads']} threads)" for b in m["blas"]) or "none loaded"
    if m.get("blas_environment"):
        blas += " — set in the environment: " + ", ".join(f"{k}={v}" for k, v in m["blas_environment"].items())
    lines = [f"**Machine**: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} CPUs, "
             f"{m['threads']} thread(s) for every system; {m['peak_dtype']} GEMM peak measured "
             f"{m['peak_gflops']:.1f} GFLOP/s. BLAS: {blas}.",
             f"**Software**: Python {m['python']}, fusedense {m['fusedense']} "
             f"(backends: {', '.join(m['fusedense_backends'])}); {libs}."]
    if m["load_average"] is not None and m["load_average"] + m["threads"] > m["usable_cpus"] + 0.5:
        lines.append(f"**Warning**: the machine was busy (load average {m['load_average']:.1f} on "
                     f"{m['usable_cpus']} CPUs before the run): {m['threads']}-thread timings compete with "
                     f"other processes; {'compare with `--threads 1` or ' if m['threads'] > 1 else ''}"
                     "rerun on an idle machine.")
    if missing:
        lines.append("**Not installed**: " + ", ".join(f"{name} ({why})" for name, why in missing.items()) + ".")
    timed = ("Each system alone in its own process, one per round, processes alternated; median of the "
             "rounds' medians" if mode == "a process per system and round" else "Median of interleaved samples")
    lines.append(f"{timed}; spread = half the interquartile range; "
                 "speed-up = NumPy time / system time, median over rounds (> 1 is faster than NumPy); "
                 "first call = building the system + its first call (JIT, sessions, imports).")
    return lines


def _table(rows):
    lines = ["| batch | system | median µs | spread | speed-up vs NumPy | GFLOP/s | % of peak | first call ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    not_applicable = {}
    for r in rows:
        if r["status"].startswith("n/a"):
            not_applicable[r["system"]] = r["status"]  # the same reason at every batch size: say it once
        elif r["status"] != "ok":
            lines.append(f"| {r['batch']} | {r['system']} | **{r['status']}** | | | | | |")
        else:
            speedup = f"{r['speedup_vs_numpy']:.2f}×" if "speedup_vs_numpy" in r else "–"
            lines.append(f"| {r['batch']} | {r['system']} | {r['median_us']:.1f} | ±{100 * r['spread']:.0f}% | "
                         f"{speedup} | {r['gflops']:.2f} | {100 * r['peak_fraction']:.1f} | "
                         f"{r['first_call_ms']:.1f} |")
    if not_applicable:
        lines += [""] + [f"- {name}: {why}" for name, why in not_applicable.items()]
    return lines


def write_json(report: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


def plot(report: dict, path) -> None:
    """Per workload: latency vs batch size per system (log axes), and achieved GFLOP/s against
    the measured GEMM peak."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in report["results"] if r["status"] == "ok"]
    titles = list(dict.fromkeys(r["title"] for r in ok))
    systems = list(dict.fromkeys(r["system"] for r in ok))
    # one colour and marker per system in every panel (training has fewer systems than inference)
    styles = {system: dict(marker="os^vD<>ph*XPd"[i % 13], color=plt.cm.tab20(i % 20), label=system)
              for i, system in enumerate(systems)}
    fig, axes = plt.subplots(2, max(1, len(titles)), figsize=(max(7.0, 4.2 * len(titles)), 7.5),
                             squeeze=False, constrained_layout=True)
    peak = report["machine"]["peak_gflops"]
    for col, title in enumerate(titles):
        latency, gflops = axes[0][col], axes[1][col]
        for system in systems:
            rows = sorted((r for r in ok if r["title"] == title and r["system"] == system), key=lambda r: r["batch"])
            if not rows:
                continue
            batches = [r["batch"] for r in rows]
            latency.plot(batches, [r["median_us"] for r in rows], **styles[system])
            gflops.plot(batches, [r["gflops"] for r in rows], **styles[system])
        gflops.axhline(peak, color="k", linestyle="--", linewidth=1, label=f"GEMM peak {peak:.0f}")
        latency.set_title(title, fontsize=9)
        latency.set_ylabel("median latency (µs)")
        gflops.set_ylabel("achieved GFLOP/s")
        for ax in (latency, gflops):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({r["batch"] for r in ok if r["title"] == title}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 32, not 2⁵
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.grid(True, which="both", alpha=0.3)
    legend = {}  # label → handle, over every panel
    for ax in axes[1]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(6, len(legend)),
               fontsize=8)
    m = report["machine"]
    fig.suptitle(f"fusedense bench — {m['cpu']}, {m['threads']} thread(s), {report['settings']['dtype']}",
                 fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
