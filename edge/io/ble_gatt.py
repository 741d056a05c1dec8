"""Bluetooth identifiers the edge listens for, and which device kind uses which (docs/ble.md). Pure.

Our own "nurserywatch sensor" GATT service, for a nap mat or posture clip on BLE instead of a
cable: one notify characteristic carrying the same NWMAT / NWIMU sentence bytes as the serial port,
``$`` to ``\\r\\n`` included, as a byte stream — a sentence may be split over several notifications
and one notification may hold several sentences, exactly as a serial read may. The edge feeds them
to the same decoder (edge/decoders/nmea.py), so the format has one definition and one parser.

The 128-bit UUIDs share a random base (generated once for this project) with the 16 bits after
"4e57" ("NW" in ASCII) numbering the attributes, as Nordic's UART service does.
"""

from __future__ import annotations

from nurserywatch.kit import DeviceKind


def sig_uuid(short: int) -> str:
    """A Bluetooth SIG 16-bit UUID in the 128-bit form bleak reports."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


_NW_BASE = "-117b-48a2-b07f-a8ae294a72b5"
#: The nurserywatch sensor service; a mat or clip advertises it in its service UUID list.
NW_SENSOR_SERVICE_UUID = "4e570001" + _NW_BASE
#: Notify: NWMAT / NWIMU sentence bytes, a byte stream as on the serial port.
NW_SENTENCE_CHAR_UUID = "4e570002" + _NW_BASE

#: Bluetooth SIG: Health Thermometer service, advertised by thermometers (HTS spec).
HEALTH_THERMOMETER_SERVICE = 0x1809
HEALTH_THERMOMETER_SERVICE_UUID = sig_uuid(HEALTH_THERMOMETER_SERVICE)
#: Indicate: Temperature Measurement, one whole measurement per indication.
TEMPERATURE_MEASUREMENT_CHAR_UUID = sig_uuid(0x2A1C)
#: BTHome v2 advertisements carry their data as service data of this 16-bit UUID.
BTHOME_SERVICE = 0xFCD2
BTHOME_SERVICE_UUID = sig_uuid(BTHOME_SERVICE)

#: Kinds the edge reads from advertisements (scanning only, never connects).
ADVERTISING_KINDS = frozenset({DeviceKind.AIR_BLE})
#: Kinds the edge connects to over GATT, and the characteristic it subscribes to.
NOTIFY_CHARACTERISTIC: dict[DeviceKind, str] = {
    DeviceKind.THERMOMETER: TEMPERATURE_MEASUREMENT_CHAR_UUID,
    DeviceKind.NAP_MAT: NW_SENTENCE_CHAR_UUID,
    DeviceKind.POSTURE_CLIP: NW_SENTENCE_CHAR_UUID,
}
#: What a connectable device advertises, so a passive scan (which only reports matches) sees it.
ADVERTISED_SERVICE: dict[DeviceKind, str] = {
    DeviceKind.THERMOMETER: HEALTH_THERMOMETER_SERVICE_UUID,
    DeviceKind.NAP_MAT: NW_SENSOR_SERVICE_UUID,
    DeviceKind.POSTURE_CLIP: NW_SENSOR_SERVICE_UUID,
}
