"""The wallet's GATT service, as firmware/board/ble.py defines it (tests/ble checks they agree)."""

AMIKO_SERVICE_UUID = "6a4e0001-7c3b-4d6e-9a15-616d696b6f01"
AMIKO_RX_UUID = "6a4e0002-7c3b-4d6e-9a15-616d696b6f01"  # write / write without response: terminal -> wallet
AMIKO_TX_UUID = "6a4e0003-7c3b-4d6e-9a15-616d696b6f01"  # notify: wallet -> terminal
