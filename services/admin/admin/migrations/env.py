from shared.db.migrations import run_env

from admin.models import Base

run_env(Base.metadata)
