"""boards.json: valid against boards.schema.json, plus what a schema cannot say."""

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from amiko_testing.micropython import mpy_cross_binary

ROOT = Path(__file__).resolve().parent.parent
BOARDS = json.loads((ROOT / "boards.json").read_text())
SCHEMA = json.loads((ROOT / "boards.schema.json").read_text())
ENTRIES = BOARDS["boards"]

# MicroPython's VALID_FEATURES (tools/autobuild/build-downloads.py): the words its board.json files may use.
MICROPYTHON_FEATURES = {
    "BLE", "CAN", "Ethernet", "LoRa", "USB", "USB-C", "WiFi", "Dual-core", "External Flash", "External RAM",
    "Feather", "JST-PH", "JST-SH", "mikroBUS", "microSD", "SDCard", "Environment Sensor", "IMU", "Audio Codec",
    "Battery Charging", "Camera", "DAC", "Display", "Microphone", "PoE", "RGB LED", "Secure Element",
}


def board_pins(entry):
    """[(where, pin)] of every GPIO the entry uses."""
    found = []
    nfc = entry["transports"].get("nfc")
    if nfc:
        found += [("nfc." + k, v) for k, v in nfc["pins"].items()]
    ui = entry["ui"]
    if ui["display"] and "pins" in ui["display"]:
        found += [("display." + k, v) for k, v in ui["display"]["pins"].items()]
    if ui["buttons"] and ui["buttons"]["type"] == "gpio":
        found += [("buttons." + k, v) for k, v in ui["buttons"]["pins"].items()]
    if ui["led"] and "pin" in ui["led"]:
        found.append(("led", ui["led"]["pin"]))
    return found


def test_schema_is_valid_and_boards_match_it():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(BOARDS)


def test_schema_refuses_broken_entries():
    v = jsonschema.Draft202012Validator(SCHEMA)
    good = ENTRIES[0]
    for broken in (dict(good, features=["Wifi"]), dict(good, id="esp32-generic"),
                   dict(good, flash={"method": "esptool", "chip": "esp32"}),
                   dict(good, min_micropython="1.22"), dict(good, mpy={"arch": "arm64"}),
                   {k: v for k, v in good.items() if k != "transports"}, dict(good, extra=1)):
        assert not v.is_valid({"schema_version": 2, "boards": [broken]}), broken


def test_required_boards_present_and_ids_unique():
    ids = [b["id"] for b in ENTRIES]
    assert len(ids) == len(set(ids))
    assert {"ESP32_GENERIC", "ESP32_GENERIC_S3", "RPI_PICO_W", "VIRTUAL"} <= set(ids)
    assert any(b["port"] == "nrf" and b["mcu"] == "nrf52" for b in ENTRIES)
    assert [b["id"] for b in ENTRIES if b["port"] == "unix"] == ["VIRTUAL"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[b["id"] for b in ENTRIES])
def test_no_pin_used_twice(entry):
    pins = board_pins(entry)
    seen = {}
    for where, pin in pins:
        if pin == "sim":
            continue
        assert pin not in seen, "%s: pin %s used by %s and %s" % (entry["id"], pin, seen[pin], where)
        seen[pin] = where


@pytest.mark.parametrize("entry", ENTRIES, ids=[b["id"] for b in ENTRIES])
def test_features_are_micropythons(entry):
    assert set(entry["features"]) <= MICROPYTHON_FEATURES
    assert entry["features"] == sorted(entry["features"])  # as MicroPython keeps them


def test_esp32_pins_avoid_flash_and_input_only_pins_for_outputs():
    for entry in ENTRIES:
        if entry["mcu"] == "esp32":
            for where, pin in board_pins(entry):
                assert pin not in range(6, 12), "%s uses an SPI-flash pin %d" % (where, pin)
                if where in ("led", "nfc.cs", "nfc.sck", "nfc.mosi", "nfc.rst", "display.sda", "display.scl"):
                    assert pin < 34, "%s on input-only GPIO %d" % (where, pin)
                if where.startswith("buttons."):
                    assert pin < 34, "%s on GPIO %d, which has no internal pull-up" % (where, pin)
        if entry["mcu"] == "esp32s3":
            for where, pin in board_pins(entry):
                assert pin not in range(26, 33) and pin not in range(35, 38), "%s on flash/PSRAM pin %d" % (where, pin)


def test_nrf_entry_is_honest():
    nrf = [b for b in ENTRIES if b["port"] == "nrf"]
    for entry in nrf:
        assert entry["status"] == "partial"
        assert entry["transports"]["ble"] is None and entry["transports"]["nfc"] is None
        assert "bluetooth" in entry["unsupported"]["ble"] and "NFCT" in entry["unsupported"]["nfc"]
        assert entry["transports"]["usb_serial"]


def test_flash_methods_fit_the_port():
    for entry in ENTRIES:
        method = entry["flash"]["method"]
        assert method == {"esp32": "esptool", "rp2": "uf2", "nrf": "uf2", "unix": "mpremote"}[entry["port"]]
    offsets = {b["mcu"]: b["flash"]["offset"] for b in ENTRIES if b["port"] == "esp32"}
    assert offsets == {"esp32": "0x1000", "esp32s3": "0x0"}


@pytest.mark.parametrize("arch", sorted({b["mpy"]["arch"] for b in ENTRIES}))
def test_mpy_arch_is_one_mpy_cross_knows(tmp_path, arch):
    src = tmp_path / "m.py"
    src.write_text("x = 1\n")
    r = subprocess.run([mpy_cross_binary(), "-march=" + arch, "-o", str(tmp_path / "m.mpy"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("entry", [b for b in ENTRIES if b["port"] != "unix"], ids=lambda b: b["id"])
def test_wiring_guide_matches_boards_json(entry):
    """hardware/<ID>.md has a pin table generated from boards.json (hardware/wiring.py), up to date."""
    doc = (ROOT / "hardware" / (entry["id"] + ".md")).read_text()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| ([^|]+?) \|", doc, re.M))
    for where, pin in board_pins(entry):
        assert rows.get(where) == str(pin), "%s: %s should be %s in the wiring guide" % (entry["id"], where, pin)
    assert (ROOT / "hardware" / (entry["id"] + ".svg")).exists()
    for section in ("Bill of materials", "Pitfalls"):
        assert "## " + section in doc


def test_wiring_files_are_up_to_date():
    r = subprocess.run(["python3", str(ROOT / "hardware" / "wiring.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
