#!/usr/bin/env python3
"""Turns the rows the benchmarks recorded (SB_BENCH_ROWS, one JSON object per line) into one
table: printed, and written into docs/benchmarks.md between the suite markers.

Usage: bench-report.py ROWS.jsonl [docs/benchmarks.md] [--seconds N] [--label TEXT] [--smoke WHY]
       bench-report.py --compare BASE.jsonl HEAD.jsonl [--label TEXT]

A row (benches/common/mod.rs, `record`) holds its sides, Switchboard first: each with the
median of its samples (`value`), their spread (`lo`, `hi`), how many (`runs`), latency
percentiles (µs), messages per CPU-second of its server and the cores that server kept
busy. `unit` msg/s: more is better; any other unit (KiB, B, s): less is better.
"""

import json
import sys
import time

BEGIN = "<!-- suite:begin (written by scripts/bench suite) -->"
END = "<!-- suite:end -->"


def more_is_better(unit):
    return unit == "msg/s"


def num(v, unit=None):
    if v is None:
        return "—"
    if unit in (None, "msg/s"):
        return f"{v:,.0f}"
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}"


def figure(side, unit):
    u = "" if unit == "msg/s" else f" {unit}"
    v = num(side.get("value"), unit) + u
    if side.get("runs", 1) > 1 and side.get("lo") is not None:
        v += f" ({num(side['lo'], unit)}–{num(side['hi'], unit)})"
    if side.get("lost"):
        v += f", {side['lost']:,} lost"
    return v


def lat(side):
    if side.get("p50_us") is None:
        return "—"
    return f"{side['p50_us']:,.0f} / {side['p99_us']:,.0f} / {side['p999_us']:,.0f}"


def efficiency(side):
    if side.get("per_cpu_s") is None:
        return "—"
    text = f"{side['per_cpu_s']:,.0f} ({side['cpu_share']:.2f})"
    if len(side.get("cpu_s") or []) > 1 and side.get("per_cpu_s_all"):
        text += f"; {side['per_cpu_s_all']:,.0f} with the peer it runs through"
    return text


def ratio(sb, peer, unit):
    if not peer.get("value") or sb.get("value") is None:
        return "—"
    r = sb["value"] / peer["value"]
    if not more_is_better(unit):
        return f"{r:.2f}× (less is better)"
    text = f"{r:.2f}×"
    # The router's path may run through the peer too (an AMQP or XMPP link): its CPU counts.
    mine = sb.get("per_cpu_s_all") or sb.get("per_cpu_s")
    if mine and peer.get("per_cpu_s"):
        text += f"; per CPU-s {mine / peer['per_cpu_s']:.2f}×"
    return text


def table(rows):
    out = ["| group | scenario | side | median (spread) | p50 / p99 / p99.9 µs | per CPU-s (cores) | Switchboard ÷ side | reproduce |",
           "|---|---|---|---|---|---|---|---|"]
    notes = {}
    for r in rows:
        sides, unit = r["sides"], r["unit"]
        sb = sides[0]
        scenario = r["scenario"] if unit == "msg/s" else f"{r['scenario']} ({unit})"
        if r.get("router_rss_mib") is not None:
            scenario += f"; router RSS {r['router_rss_mib']:.0f} MiB"
        if r.get("note"):
            notes.setdefault((r["group"], r["note"]), []).append(r["scenario"])
        for i, s in enumerate(sides):
            out.append("| " + " | ".join([
                r["group"] if i == 0 else "",
                scenario if i == 0 else "",
                s["name"], figure(s, unit), lat(s), efficiency(s),
                "—" if i == 0 else ratio(sb, s, unit),
                f"`{r['command']}`" if i == 0 and r.get("command") else ""]) + " |")
    text = "\n".join(out)
    if notes:
        rows_of = {}
        for r in rows:
            rows_of.setdefault(r["group"], []).append(r["scenario"])
        lines = []
        for (group, note), names in notes.items():
            which = "every row" if names == rows_of[group] else "; ".join(names)
            lines.append(f"- **{group}** ({which}): {note}.")
        text += "\n\nWhat each row compares:\n\n" + "\n".join(lines)
    return text


def load(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def compare(base_path, head_path, label):
    """Switchboard's side of each row, BASE's build against HEAD's (same load generator)."""
    base = {(r["group"], r["scenario"]): r for r in load(base_path)}
    out = [f"`scripts/bench compare` {label}".rstrip(), "",
           "| group | scenario | base | head | head ÷ base | per CPU-s head ÷ base |",
           "|---|---|---|---|---|---|"]
    for h in load(head_path):
        b = base.get((h["group"], h["scenario"]))
        hs, unit = h["sides"][0], h["unit"]
        if b is None:
            out.append(f"| {h['group']} | {h['scenario']} | — | {figure(hs, unit)} | — | — |")
            continue
        bs = b["sides"][0]
        r = f"{hs['value'] / bs['value']:.3f}×" if bs.get("value") else "—"
        if not more_is_better(unit):
            r += " (less is better)"
        e = (f"{hs['per_cpu_s'] / bs['per_cpu_s']:.3f}×"
             if hs.get("per_cpu_s") and bs.get("per_cpu_s") else "—")
        out.append(f"| {h['group']} | {h['scenario']} | {figure(bs, unit)} | {figure(hs, unit)} | {r} | {e} |")
    print("\n".join(out))


def option(name):
    if name in sys.argv:
        i = sys.argv.index(name)
        value = sys.argv[i + 1]
        del sys.argv[i:i + 2]
        return value
    return None


def main():
    seconds = option("--seconds")
    label = option("--label") or ""
    smoke = option("--smoke")
    if "--compare" in sys.argv:
        sys.argv.remove("--compare")
        compare(sys.argv[1], sys.argv[2], label)
        return
    args = sys.argv[1:]
    rows = load(args[0])
    t = table(rows)
    if smoke:
        t = (f"**Not figures to quote: a smoke run** ({smoke}). On a quiet machine, "
             f"`scripts/bench suite` replaces this table with one from full samples.\n\n" + t)
    print(t)
    if len(args) > 1:
        doc = open(args[1]).read()
        when = time.strftime("%Y-%m-%d")
        took = f" in {int(seconds) // 60} min {int(seconds) % 60} s" if seconds else ""
        section = (f"{BEGIN}\n\n`scripts/bench suite` on {when}{took}{', ' + label if label else ''}: "
                   f"every row below from this one run (the shipped release build, `cargo build --release`; peers on the same machine; "
                   f"msg/s unless a unit is given; spread = lowest–highest sample; per CPU-s = "
                   f"messages per CPU-second of that side's server, with the cores it kept busy; "
                   f"Switchboard ÷ side: the ratio of the medians, then of the per CPU-s figures). "
                   f"The sections after this table describe each scenario and its goal.\n\n{t}\n\n{END}")
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
        else:
            first = doc.index("\n## ")
            doc = doc[:first] + "\n\n## All scenarios, one run\n\n" + section + "\n" + doc[first:]
        open(args[1], "w").write(doc)


main()
