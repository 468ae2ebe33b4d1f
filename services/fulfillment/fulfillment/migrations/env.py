from shared.db.migrations import run_env

from fulfillment.models import Base

run_env(Base.metadata)
