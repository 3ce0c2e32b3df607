"""``sweep``: the minute timer that drains the outbox through the configured dispatcher."""
from __future__ import annotations

import azure.functions as func

from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("sweep")
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False, use_monitor=True)
@traced
def sweep(timer: func.TimerRequest) -> None:
    from controlplane import bootstrap
    from controlplane.handlers.sweep import sweep as drain_outbox

    drain_outbox(bootstrap.services())
