"""BitLoot webhooks service."""
