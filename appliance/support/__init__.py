"""Support: the signed health report a technician exports to USB for the vendor."""
