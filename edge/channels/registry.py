"""Which Channel class reads which kind of device. One line per kind; the agent and `doctor` both
build channels from here, so they decode the same way."""

from __future__ import annotations

from collections.abc import Callable

from edge.channels.air import Mhz19bChannel, Pms5003Channel, SenseairS8Channel
from edge.channels.base import Channel
from edge.channels.ble import BTHomeAirChannel, ThermometerChannel
from edge.channels.clip import ClipChannel
from edge.channels.mat import MatChannel
from edge.dsp.breathing import BreathingConfig
from nurserywatch.kit import Device, DeviceKind

CHANNELS: dict[DeviceKind, Callable[[Device], Channel]] = {
    DeviceKind.POSTURE_CLIP: lambda device: ClipChannel(device.id),
    DeviceKind.THERMOMETER: ThermometerChannel.for_device,
    DeviceKind.AIR_BLE: BTHomeAirChannel.for_device,
    DeviceKind.PMS5003: lambda device: Pms5003Channel(device.id),
    DeviceKind.MHZ19B: lambda device: Mhz19bChannel(device.id),
    DeviceKind.SENSEAIR_S8: lambda device: SenseairS8Channel(device.id),
    DeviceKind.NAP_MAT: lambda device: MatChannel(device.id, BreathingConfig.for_scale(device.counts_per_kg)),
}


def make_channel(device: Device) -> Channel | None:
    """The channel for ``device``, or None if this edge version cannot read its kind."""
    factory = CHANNELS.get(device.kind)
    return factory(device) if factory is not None else None
