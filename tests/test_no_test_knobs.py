"""Production code reads no test knob from the environment: misbehaviour for the failure tests
is a developer option of `amiko node --developer` (issue 15), never an AMIKO_TEST_* variable."""

import pathlib
import re

HOST = pathlib.Path(__file__).resolve().parent.parent / "host" / "amiko"
KNOB = re.compile(r"AMIKO_TEST_\w*")


def test_host_code_names_no_amiko_test_variable():
    found = ["%s: %s" % (path.relative_to(HOST), name)
             for path in sorted(HOST.rglob("*.py"))
             for name in KNOB.findall(path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_scan_sees_host_code():
    assert (HOST / "node" / "paylink_tcp.py").is_file()
