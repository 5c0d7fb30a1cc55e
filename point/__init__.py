"""The point device: a Raspberry Pi Zero 2 W in a meeting point's post.

``bart point run`` drives the panic buttons and lights of one meeting point
(:mod:`hardware`), keeps every press in a small durable outbox, and delivers
it to its node over MQTT with TLS, again and again until the node has it. The
light says "not delivered" until the node confirms that it stored the alarm.
"""

from .device import PointDevice, load_bundle
from .outbox import Outbox

__all__ = ["Outbox", "PointDevice", "load_bundle"]
