"""Writes one benchmark's section into bench/RESULTS.md, between markers, keeping the others."""

import datetime
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def machine():
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return "%s, %d cores, %s, Python %s" % (cpu, os.cpu_count() or 0, platform.platform(), platform.python_version())


def write_section(name, command, body):
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "<!-- %s:begin -->\n## %s\n\nMeasured %s on %s.\nCommand: `%s`\n\n%s\n<!-- %s:end -->" % (
        name, name, stamp, machine(), command, body.strip(), name)
    pattern = re.compile(r"<!-- %s:begin -->.*?<!-- %s:end -->" % (re.escape(name), re.escape(name)), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
