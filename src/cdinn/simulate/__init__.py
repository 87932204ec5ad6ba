"""Object generators and simulated diffraction patterns."""

from cdinn.simulate.crystal import faceted_crystal, simulate_pattern

__all__ = ["faceted_crystal", "simulate_pattern"]
