"""BitLoot payments service."""
