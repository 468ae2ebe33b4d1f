"""BitLoot platform package: everything the services share, and nothing service-specific."""
