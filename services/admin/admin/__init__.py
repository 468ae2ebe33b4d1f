"""BitLoot admin service."""
