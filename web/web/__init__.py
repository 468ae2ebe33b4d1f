"""BitLoot web: storefront and admin console."""
