"""BitLoot orders service."""
