"""The wallet's GATT service (amiko_core.walletlink, the table the firmware uses too)."""

from amiko_core.walletlink import RX_UUID as AMIKO_RX_UUID  # write / write without response: terminal -> wallet
from amiko_core.walletlink import SERVICE_UUID as AMIKO_SERVICE_UUID
from amiko_core.walletlink import TX_UUID as AMIKO_TX_UUID  # notify: wallet -> terminal
