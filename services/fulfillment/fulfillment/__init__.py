"""BitLoot fulfillment service."""
