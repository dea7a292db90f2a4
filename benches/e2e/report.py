#!/usr/bin/env python3
"""Turns one scripts/bench-e2e.sh output directory into Markdown tables and a goal check.

Usage: benches/e2e/report.py DIR
"""
import json
import pathlib
import statistics
import sys

GOAL_RATIO = 0.75  # fsync group commit vs ceiling, acknowledged positions/s
GOAL_KB_PER_CONN = 3.0  # per idle registered connection
GOAL_REGISTRATION_MS = 2000.0  # 10,000 terminals registered + authenticated


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ms(us):
    return f"{us / 1000:.2f}"


def main(out):
    out = pathlib.Path(out)
    runs, idle = [], []
    for server_file in sorted(out.glob("*.server.json")):
        server = load(server_file)
        if server is None:
            continue
        label = server["label"]
        sim = load(out / f"{label}.json") or {}
        exit_file = out / f"{label}.exit"
        server["exit"] = exit_file.read_text().strip() if exit_file.exists() else "?"
        (idle if server["mode"] == "idle" else runs).append((server, sim))

    # Each run is compared with the ceiling of its own round (runs of one round follow each
    # other; the machine's load drifts between rounds).
    def key(s):
        return (s["devices"], s["mode"], s.get("round", 1))

    ceiling = {
        key(s): sim.get("acked_positions_per_s", 0.0) for s, sim in runs if s["server"] == "ceiling"
    }
    order = {"ceiling": 0, "fsync": 1, "buffered": 2}
    runs.sort(key=lambda r: (*key(r[0]), order.get(r[0]["server"], 9)))

    lines = []
    env = out / "env.txt"
    if env.exists():
        lines.append("```")
        lines.extend(env.read_text().strip().splitlines())
        lines.append("```")
        lines.append("")
    lines.append(
        "| server | devices | mode | round | acked positions/s | × ceiling | p50 ms | p90 ms | p99 ms | max ms "
        "| positions per device p10 / p50 / p90 | registration ms | SYN drops | errors | server CPU µs/position | simulator CPU µs/position | server RSS end MB | sim exit |"
    )
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for server, sim in runs:
        rate = sim.get("acked_positions_per_s", 0.0)
        base = ceiling.get(key(server))
        ratio = f"{rate / base:.2f}" if base else "–"
        lat = sim.get("latency", {})
        errors = sim.get("errors", {})
        err = ", ".join(f"{k}={v}" for k, v in errors.items()) or "0"
        reg = sim.get("registration_ms")
        acked = sim.get("positions_acked_total", 0)
        cpu = server.get("server_cpu_s")
        per_pos = f"{cpu * 1e6 / acked:.1f}" if cpu is not None and acked else "–"
        # The simulator's own CPU over the reporting phase, per position acknowledged in it: what
        # a position costs the load generator depends on the server it talks to (session 16).
        sim_cpu = sim.get("reporting_cpu_s")
        in_window = sim.get("positions_acked", 0)
        sim_per_pos = f"{sim_cpu * 1e6 / in_window:.1f}" if sim_cpu is not None and in_window else "–"
        dev = sim.get("per_device") or {}
        spread = f"{dev['p10']} / {dev['p50']} / {dev['p90']}" if dev.get("devices") else "–"
        lines.append(
            f"| {server['server']} | {server['devices']} | {server['mode']} | {server.get('round', 1)} | {rate:,.0f} | {ratio} "
            f"| {ms(lat.get('p50_us', 0))} | {ms(lat.get('p90_us', 0))} | {ms(lat.get('p99_us', 0))} "
            f"| {ms(lat.get('max_us', 0))} | {spread} | {reg if reg is not None else 'incomplete'} | {server.get('listen_overflows', '?')} | {err} | {per_pos} "
            f"| {sim_per_pos} | {server.get('rss_end_kb', 0) / 1024:.1f} | {server['exit']} |"
        )
    spill = [s for s, _ in runs if "server_cpu_other_turns_s" in s]
    if spill:
        # Work that ran on into another server's turn (bench-e2e.sh, interleaved): mostly the answers
        # to the reports in flight when a turn ended, which the simulator leaves out of the rate.
        lines.append("")
        lines.append(
            "Interleaved runs share the machine-wide SYN drop counter. CPU each interleaved server used "
            "during the other servers' turns (part of its CPU per position): "
            + "; ".join(
                f"{s['label']} {s['server_cpu_other_turns_s']:.2f} of {s.get('server_cpu_s', 0):.2f} s" for s in spill
            )
            + "."
        )
    lines.append("")
    lines.append(
        "| server | idle registered connections | RSS before KB | RSS idle KB | KB per connection "
        "| registration ms | SYN drops | errors |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for server, sim in idle:
        errors = sim.get("errors", {})
        err = ", ".join(f"{k}={v}" for k, v in errors.items()) or "0"
        reg = sim.get("registration_ms")
        lines.append(
            f"| {server['server']} | {server['devices']} | {server['rss_before_kb']} | {server['rss_idle_kb']} "
            f"| {server['kb_per_connection']} | {reg if reg is not None else 'incomplete'} "
            f"| {server.get('listen_overflows', '?')} | {err} |"
        )

    lines.append("")
    lines.append("Goals:")
    ratios = {}
    for server, sim in runs:
        if server["server"] == "fsync" and server["mode"] in ("closed", "interleaved"):
            base = ceiling.get(key(server))
            if base:
                ratios.setdefault((server["mode"], server["devices"]), []).append(
                    sim.get("acked_positions_per_s", 0.0) / base
                )
    # "interleaved": closed loop, the servers reporting in turns of a few seconds (bench-e2e.sh).
    loop_names = {"closed": "closed loop", "interleaved": "closed loop interleaved"}
    for (mode, devices), rs in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        median = statistics.median(rs)
        every = all(r >= GOAL_RATIO for r in rs)
        if len(rs) == 1:
            verdict = "met" if every else "MISSED"
            detail = f"{rs[0]:.2f}×"
        else:
            verdict = "met in every round" if every else ("met by the median" if median >= GOAL_RATIO else "MISSED")
            detail = f"{' / '.join(f'{r:.2f}' for r in rs)}× in {len(rs)} rounds, median {median:.2f}×"
        lines.append(
            f"- fsync {loop_names[mode]}, {devices} devices: {detail} ceiling (goal ≥ {GOAL_RATIO}×): {verdict}"
        )
    for server, sim in idle:
        if server["server"] in ("fsync", "buffered"):
            kb = float(server["kb_per_connection"])
            verdict = "met" if kb <= GOAL_KB_PER_CONN else "MISSED"
            lines.append(
                f"- {server['server']}: {kb:.2f} KB per idle registered connection "
                f"(goal ≤ {GOAL_KB_PER_CONN} KB): {verdict}"
            )
    for server, sim in idle + runs:
        if server["server"] in ("fsync", "buffered") and server["devices"] >= 10000:
            reg = sim.get("registration_ms")
            verdict = "met" if reg is not None and reg < GOAL_REGISTRATION_MS else "MISSED"
            lines.append(
                f"- {server['label']}: {server['devices']} registrations in "
                f"{reg if reg is not None else 'incomplete'} ms (goal < {GOAL_REGISTRATION_MS:.0f} ms): {verdict}"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
