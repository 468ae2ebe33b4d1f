from shared.db.migrations import run_env

from payments.models import Base

run_env(Base.metadata)
