#!/usr/bin/env python3
"""Plot the bitrate trace of `braid sim --source x264` as an SVG (stdlib only).

    braid sim --scenario dev --source x264 > run.json
    python3 scripts/plot_bitrate.py run.json docs/bitrate-dev.svg

Lines per second of the run: the traces' summed capacity, the same capped at the
controller's ceiling (what the goodput figure counts), the controller's target and
what the encoder produced; bars at the bottom: media datagrams lost or late.
"""
import json
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    r = json.load(open(src))
    secs = r["seconds"]
    ceiling = r["ceiling_bps"] / 1e6
    w, h, left, right, top, bottom = 900, 360, 50, 160, 20, 40
    pw, ph = w - left - right, h - top - bottom
    ymax = max(16.0, ceiling * 1.25)
    n = max(len(secs), 1)

    def x(t):
        return left + pw * t / n

    def y(v):
        return top + ph * (1 - min(v, ymax) / ymax)

    def line(key, scale, colour, dash="", cap=None):
        pts = []
        for s in secs:
            v = s[key] / scale
            if cap is not None:
                v = min(v, cap)
            pts.append(f"{x(s['t_s'] + 0.5):.1f},{y(v):.1f}")
        d = f' stroke-dasharray="{dash}"' if dash else ""
        return (f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{d} '
                f'points="{" ".join(pts)}"/>')

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for v in range(0, int(ymax) + 1, 4):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v}</text>')
    for t in range(0, n + 1, 10):
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle">seconds</text>')
    out.append(f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
               f'text-anchor="middle">Mbit/s</text>')
    missed_max = max([s.get("missed", 0) for s in secs] + [1])
    for s in secs:
        m = s.get("missed", 0)
        if m:
            bh = 30 * m / missed_max
            out.append(f'<rect x="{x(s["t_s"]):.1f}" y="{top + ph - bh:.1f}" '
                       f'width="{pw / n:.1f}" height="{bh:.1f}" fill="#d62728" opacity="0.6"/>')
    out.append(line("capacity_bps", 1e6, "#bbbbbb"))
    out.append(line("capacity_bps", 1e6, "#555555", "4 3", cap=ceiling))
    out.append(line("target_bps", 1e6, "#1f77b4"))
    out.append(line("encoded_bps", 1e6, "#ff7f0e"))
    legend = [("#bbbbbb", "trace capacity (sum)"), ("#555555", f"capped at {ceiling:.0f} Mbit/s"),
              ("#1f77b4", "controller target"), ("#ff7f0e", "encoder output"),
              ("#d62728", "lost or late (bars)")]
    for i, (c, label) in enumerate(legend):
        ly = top + 14 + i * 18
        out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                   f'stroke="{c}" stroke-width="3"/><text x="{left + pw + 36}" y="{ly + 4}">{label}</text>')
    title = (f'{r["scenario"]}: goodput {r["goodput_bps"] / 1e6:.2f} Mbit/s = '
             f'{r["goodput_fraction"]:.3f} of counted capacity, '
             f'{100 * r["on_time_fraction"]:.3f} % on time')
    out.append(f'<text x="{left}" y="{top - 6}">{title}</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
