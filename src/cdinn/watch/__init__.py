"""``cdinn watch``: invert every scan as it lands in a folder, and a live page of the results."""

from cdinn.watch.ledger import Entry, Ledger
from cdinn.watch.watcher import Watcher, eligible, later_processor, network_processor, phase_processor

__all__ = ["Entry", "Ledger", "Watcher", "eligible", "later_processor", "network_processor", "phase_processor"]
