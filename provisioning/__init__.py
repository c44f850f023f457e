"""Vendor and factory side: keys, bundle build and signing, site set-up."""
